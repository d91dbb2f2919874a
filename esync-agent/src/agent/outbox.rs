//! Final reports: the journaled outbox and re-sending the last report.

use esync_proto::envelope::Recipient;
use esync_proto::id::CorrelationId;
use esync_proto::message::Payload;

use crate::state::{OutboxEntry, UpdateRecord};

use super::{Agent, Outgoing, Output};

impl Agent {
    /// Queues a final report in the outbox (journaled by the caller's next
    /// persist, which must come before the report leaves).
    pub(super) fn emit_final(
        &mut self,
        out: &mut Output,
        correlation: CorrelationId,
        payload: Payload,
    ) {
        let id = self.j.next_outbox_id;
        self.j.next_outbox_id += 1;
        self.j.outbox.push(OutboxEntry {
            id,
            correlation,
            payload: payload.clone(),
        });
        if let Some(u) = &mut self.j.update {
            u.last_report = Some(payload.clone());
        }
        out.messages.push(Outgoing {
            recipient: Recipient::Client,
            correlation,
            payload,
            outbox_id: Some(id),
        });
    }

    pub(super) fn reemit_outbox(&self, out: &mut Output) {
        for e in &self.j.outbox {
            out.messages.push(Outgoing {
                recipient: Recipient::Client,
                correlation: e.correlation,
                payload: e.payload.clone(),
                outbox_id: Some(e.id),
            });
        }
    }

    pub(super) fn resend_last(
        &self,
        rec: &UpdateRecord,
        corr: CorrelationId,
        out: &mut Output,
    ) -> bool {
        if let Some(r) = &rec.last_report {
            out.send(corr, r.clone());
            true
        } else {
            false
        }
    }
}
