//! The SQL shared by both backends. The statements are written once, in the
//! dialect common to SQLite (3.35+) and PostgreSQL (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`); [`store_impl!`] instantiates them for a
//! concrete pool type. Only the job claim differs (PostgreSQL adds
//! `FOR UPDATE SKIP LOCKED`).

use super::{DbError, Digest};

/// Maps a driver error: unique violations become [`DbError::Conflict`],
/// foreign-key violations [`DbError::NotFound`].
pub(super) fn map_err(e: sqlx::Error, entity: &'static str, key: &str) -> DbError {
    if let sqlx::Error::Database(d) = &e {
        match d.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return DbError::Conflict {
                    entity,
                    key: key.to_owned(),
                }
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return DbError::NotFound {
                    entity: "referenced row",
                    key: key.to_owned(),
                }
            }
            _ => {}
        }
    }
    DbError::Sqlx(e)
}

pub(super) fn digest(v: Vec<u8>, column: &'static str) -> Result<Digest, DbError> {
    <Digest>::try_from(v.as_slice()).map_err(|_| DbError::Corrupt {
        column,
        reason: format!("{} bytes, want 32", v.len()),
    })
}

pub(super) fn to_u64(v: i64, column: &'static str) -> Result<u64, DbError> {
    u64::try_from(v).map_err(|_| DbError::Corrupt {
        column,
        reason: format!("negative value {v}"),
    })
}

pub(super) fn to_i64(v: u64, what: &'static str) -> Result<i64, DbError> {
    i64::try_from(v).map_err(|_| DbError::Invalid {
        what,
        reason: format!("{v} exceeds i64"),
    })
}

pub(super) fn inserted(rows: u64) -> super::Inserted {
    if rows == 0 {
        super::Inserted::Existing
    } else {
        super::Inserted::New
    }
}

/// Writes a metadata file unless a version at least as high is stored.
pub(super) const PUT_METADATA: &str =
    "INSERT INTO repo_metadata (repo, scope, name, version, body, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (repo, scope, name) DO UPDATE SET \
     version = excluded.version, body = excluded.body, created_ms = excluded.created_ms \
     WHERE repo_metadata.version < excluded.version";

/// Members inserted per statement when a campaign starts (3 parameters
/// each, well under either backend's parameter limit).
pub(super) const MEMBER_BATCH: usize = 300;

/// `INSERT INTO campaign_members` of `n` rows: `$1` is the campaign, then
/// (vin, wave) pairs.
pub(super) fn member_insert(n: usize) -> String {
    let mut s =
        String::from("INSERT INTO campaign_members (campaign_id, vin, wave, state) VALUES ");
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("($1, ${}, ${}, 'pending')", 2 + 2 * i, 3 + 2 * i));
    }
    s
}

/// `'a', 'b'` of the states' stored names (constants, never user input).
pub(super) fn state_list(states: &[super::CampaignState]) -> String {
    if states.is_empty() {
        return "NULL".into();
    }
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn to_wave(v: i64) -> Result<u32, DbError> {
    u32::try_from(v).map_err(|_| DbError::Corrupt {
        column: "campaign_members.wave",
        reason: format!("{v} out of range"),
    })
}

/// Wave counts from `(wave, state, count)` rows ordered by wave.
pub(super) fn fold_counts(
    rows: Vec<(i64, String, i64)>,
) -> Result<Vec<super::WaveCounts>, DbError> {
    let mut out: Vec<super::WaveCounts> = Vec::new();
    for (wave, state, n) in rows {
        let wave = to_wave(wave)?;
        let state = super::MemberState::parse(&state)?;
        let n = to_u64(n, "count")?;
        match out.last_mut() {
            Some(w) if w.wave == wave => w.add(state, n),
            _ => {
                let mut w = super::WaveCounts {
                    wave,
                    ..Default::default()
                };
                w.add(state, n);
                out.push(w);
            }
        }
    }
    Ok(out)
}

/// Blocks `package_id` for `vin` (kept if already blocked): `$1` vin,
/// `$2` package, `$3` outcome, `$4` time.
pub(super) const BLOCK: &str =
    "INSERT INTO rollback_blocks (vin, package_id, outcome, created_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (vin, package_id) DO NOTHING";

macro_rules! job_cols {
    () => {
        "id, from_sha256, to_sha256, format, state, claimed_by, attempts, result_sha256, result_length, error"
    };
}
pub(super) use job_cols;

macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE delta_jobs SET state = 'running', claimed_by = $1, claimed_ms = $2, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM delta_jobs \
               WHERE state = 'queued' OR (state = 'running' AND claimed_ms < $3) \
               ORDER BY id LIMIT 1 ",
            $lock,
            ") RETURNING ",
            $crate::store::sql::job_cols!()
        )
    };
}
pub(super) use claim_sql;

/// Implements [`super::Store`] for `$ty` (a struct with field `pool: $pool`)
/// whose rows are `$row`; `$claim` is the job claim statement.
macro_rules! store_impl {
    ($ty:ty, $row:ty, $db:ty, $claim:expr) => {
        impl $ty {
            fn vehicle_row(r: &$row) -> Result<$crate::store::VehicleRecord, $crate::store::DbError> {
                use sqlx::Row as _;
                let hw: String = r.try_get("hardware_ids")?;
                Ok($crate::store::VehicleRecord {
                    vin: r.try_get("vin")?,
                    model: r.try_get("model")?,
                    region: r.try_get("region")?,
                    hardware_ids: serde_json::from_str(&hw).map_err(|e| {
                        $crate::store::DbError::Corrupt {
                            column: "vehicles.hardware_ids",
                            reason: e.to_string(),
                        }
                    })?,
                })
            }

            fn ecu_row(r: &$row) -> Result<$crate::store::Ecu, $crate::store::DbError> {
                use sqlx::Row as _;
                Ok($crate::store::Ecu {
                    serial: r.try_get("serial")?,
                    vin: r.try_get("vin")?,
                    hardware_id: r.try_get("hardware_id")?,
                    primary: r.try_get("is_primary")?,
                    public_key: r.try_get("public_key")?,
                })
            }

            fn cert_row(
                r: &$row,
            ) -> Result<$crate::store::Certificate, $crate::store::DbError> {
                use sqlx::Row as _;
                Ok($crate::store::Certificate {
                    serial: r.try_get("serial")?,
                    subject: r.try_get("subject")?,
                    der: r.try_get("der")?,
                    issued_ms: r.try_get("issued_ms")?,
                    not_after_ms: r.try_get("not_after_ms")?,
                    revoked_ms: r.try_get("revoked_ms")?,
                    revocation_reason: r.try_get("revocation_reason")?,
                })
            }

            fn image_row(r: &$row) -> Result<$crate::store::Image, $crate::store::DbError> {
                use sqlx::Row as _;
                Ok($crate::store::Image {
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    sha256: $crate::store::sql::digest(r.try_get("sha256")?, "images.sha256")?,
                    length: $crate::store::sql::to_u64(r.try_get("length")?, "images.length")?,
                    hardware_id: r.try_get("hardware_id")?,
                })
            }

            fn job_row(r: &$row) -> Result<$crate::store::DeltaJob, $crate::store::DbError> {
                use sqlx::Row as _;
                let state: String = r.try_get("state")?;
                let result: Option<Vec<u8>> = r.try_get("result_sha256")?;
                let length: Option<i64> = r.try_get("result_length")?;
                Ok($crate::store::DeltaJob {
                    id: r.try_get("id")?,
                    from_sha256: $crate::store::sql::digest(
                        r.try_get("from_sha256")?,
                        "delta_jobs.from_sha256",
                    )?,
                    to_sha256: $crate::store::sql::digest(
                        r.try_get("to_sha256")?,
                        "delta_jobs.to_sha256",
                    )?,
                    format: r.try_get("format")?,
                    state: $crate::store::DeltaState::parse(&state)?,
                    claimed_by: r.try_get("claimed_by")?,
                    attempts: r.try_get("attempts")?,
                    result_sha256: result
                        .map(|v| $crate::store::sql::digest(v, "delta_jobs.result_sha256"))
                        .transpose()?,
                    result_length: length
                        .map(|v| $crate::store::sql::to_u64(v, "delta_jobs.result_length"))
                        .transpose()?,
                    error: r.try_get("error")?,
                })
            }

            fn campaign_row(
                r: &$row,
            ) -> Result<$crate::store::CampaignRecord, $crate::store::DbError> {
                use sqlx::Row as _;
                let state: String = r.try_get("state")?;
                let wave = |c: &'static str, v: i64| {
                    u32::try_from(v).map_err(|_| $crate::store::DbError::Corrupt {
                        column: c,
                        reason: format!("{v} out of range"),
                    })
                };
                Ok($crate::store::CampaignRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    package_id: r.try_get("package_id")?,
                    spec_json: r.try_get("spec")?,
                    state: $crate::store::CampaignState::parse(&state)?,
                    reason: r.try_get("reason")?,
                    current_wave: wave("campaigns.current_wave", r.try_get("current_wave")?)?,
                    wave_count: wave("campaigns.wave_count", r.try_get("wave_count")?)?,
                    matched: $crate::store::sql::to_u64(r.try_get("matched")?, "campaigns.matched")?,
                    created_ms: r.try_get("created_ms")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            }

            fn member_row(r: &$row) -> Result<$crate::store::MemberRecord, $crate::store::DbError> {
                use sqlx::Row as _;
                let state: String = r.try_get("state")?;
                let wave: i64 = r.try_get("wave")?;
                Ok($crate::store::MemberRecord {
                    campaign_id: r.try_get("campaign_id")?,
                    vin: r.try_get("vin")?,
                    wave: $crate::store::sql::to_wave(wave)?,
                    state: $crate::store::MemberState::parse(&state)?,
                    offered_ms: r.try_get("offered_ms")?,
                    finished_ms: r.try_get("finished_ms")?,
                })
            }

            /// Evaluates campaign `rec`'s thresholds inside `tx`, which
            /// holds its row lock, and applies the transition, if any.
            /// Returns the state after.
            async fn evaluate_locked(
                tx: &mut sqlx::Transaction<'_, $db>,
                rec: &$crate::store::CampaignRecord,
                result: Option<(u32, $crate::store::MemberState)>,
                now_ms: i64,
            ) -> Result<$crate::store::CampaignState, $crate::store::DbError> {
                let id = rec.id;
                let rows: Vec<(i64, String, i64)> = sqlx::query_as(
                    "SELECT wave, state, COUNT(*) FROM campaign_members \
                     WHERE campaign_id = $1 AND wave = $2 GROUP BY wave, state",
                )
                .bind(id)
                .bind(i64::from(rec.current_wave))
                .fetch_all(&mut **tx)
                .await?;
                let mut current = $crate::store::sql::fold_counts(rows)?
                    .pop()
                    .unwrap_or_default();
                current.wave = rec.current_wave;
                let unfinished: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM campaign_members WHERE campaign_id = $1 \
                     AND state IN ('pending', 'offered') LIMIT 1",
                )
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(t) =
                    $crate::campaigns::evaluate(rec, &current, unfinished.is_some(), result)?
                else {
                    return Ok(rec.state);
                };
                sqlx::query(
                    "UPDATE campaigns SET state = $2, reason = $3, current_wave = $4, \
                     updated_ms = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(t.state.as_str())
                .bind(t.reason.as_deref())
                .bind(i64::from(t.current_wave))
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "INSERT INTO campaign_events (campaign_id, vin, at_ms, event, detail) \
                     VALUES ($1, NULL, $2, $3, $4)",
                )
                .bind(id)
                .bind(now_ms)
                .bind(t.event)
                .bind(t.reason.as_deref())
                .execute(&mut **tx)
                .await?;
                Ok(t.state)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $ty {
            async fn upsert_vehicle(
                &self,
                v: &$crate::store::VehicleRecord,
                now_ms: i64,
            ) -> Result<(), $crate::store::DbError> {
                let hw = serde_json::to_string(&v.hardware_ids).map_err(|e| {
                    $crate::store::DbError::Invalid {
                        what: "hardware ids",
                        reason: e.to_string(),
                    }
                })?;
                sqlx::query(
                    "INSERT INTO vehicles (vin, model, region, hardware_ids, created_ms) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (vin) DO UPDATE SET \
                     model = excluded.model, region = excluded.region, \
                     hardware_ids = excluded.hardware_ids",
                )
                .bind(&v.vin)
                .bind(&v.model)
                .bind(&v.region)
                .bind(hw)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "vehicle", &v.vin))?;
                Ok(())
            }

            async fn vehicle(
                &self,
                vin: &str,
            ) -> Result<Option<$crate::store::VehicleRecord>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM vehicles WHERE vin = $1")
                    .bind(vin)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::vehicle_row)
                    .transpose()
            }

            async fn vehicles(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<$crate::store::VehicleRecord>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM vehicles WHERE vin > $1 ORDER BY vin LIMIT $2")
                    .bind(after.unwrap_or(""))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(Self::vehicle_row)
                    .collect()
            }

            async fn upsert_ecu(
                &self,
                e: &$crate::store::Ecu,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO ecus (serial, vin, hardware_id, is_primary, public_key) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (serial) DO UPDATE SET \
                     vin = excluded.vin, hardware_id = excluded.hardware_id, \
                     is_primary = excluded.is_primary, public_key = excluded.public_key",
                )
                .bind(&e.serial)
                .bind(&e.vin)
                .bind(&e.hardware_id)
                .bind(e.primary)
                .bind(&e.public_key)
                .execute(&self.pool)
                .await
                .map_err(|err| $crate::store::sql::map_err(err, "primary ECU", &e.vin))?;
                Ok(())
            }

            async fn ecus(
                &self,
                vin: &str,
            ) -> Result<Vec<$crate::store::Ecu>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM ecus WHERE vin = $1 ORDER BY serial")
                    .bind(vin)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(Self::ecu_row)
                    .collect()
            }

            async fn insert_certificate(
                &self,
                c: &$crate::store::Certificate,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO certificates (serial, subject, der, issued_ms, not_after_ms, \
                     revoked_ms, revocation_reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&c.serial)
                .bind(&c.subject)
                .bind(&c.der)
                .bind(c.issued_ms)
                .bind(c.not_after_ms)
                .bind(c.revoked_ms)
                .bind(&c.revocation_reason)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "certificate", &c.serial))?;
                Ok(())
            }

            async fn certificate(
                &self,
                serial: &str,
            ) -> Result<Option<$crate::store::Certificate>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM certificates WHERE serial = $1")
                    .bind(serial)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::cert_row)
                    .transpose()
            }

            async fn revoke_certificate(
                &self,
                serial: &str,
                reason: Option<&str>,
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let r = sqlx::query(
                    "UPDATE certificates SET revoked_ms = $1, revocation_reason = $2 \
                     WHERE serial = $3 AND revoked_ms IS NULL",
                )
                .bind(now_ms)
                .bind(reason)
                .bind(serial)
                .execute(&self.pool)
                .await?;
                if r.rows_affected() == 1 {
                    return Ok($crate::store::Inserted::New);
                }
                match self.certificate(serial).await? {
                    Some(_) => Ok($crate::store::Inserted::Existing),
                    None => Err($crate::store::DbError::NotFound {
                        entity: "certificate",
                        key: serial.to_owned(),
                    }),
                }
            }

            async fn revocations(
                &self,
                now_ms: i64,
            ) -> Result<Vec<$crate::store::Revocation>, $crate::store::DbError> {
                use sqlx::Row as _;
                let rows = sqlx::query(
                    "SELECT serial, revoked_ms, revocation_reason FROM certificates \
                     WHERE revoked_ms IS NOT NULL AND not_after_ms > $1 ORDER BY serial",
                )
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| -> Result<$crate::store::Revocation, $crate::store::DbError> {
                        Ok($crate::store::Revocation {
                            serial: r.try_get("serial")?,
                            revoked_ms: r.try_get("revoked_ms")?,
                            reason: r.try_get("revocation_reason")?,
                        })
                    })
                    .collect()
            }

            async fn insert_image(
                &self,
                i: &$crate::store::Image,
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let key = format!("{} {} {}", i.name, i.version, i.hardware_id);
                let r = sqlx::query(
                    "INSERT INTO images (sha256, name, version, length, hardware_id, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(&i.sha256[..])
                .bind(&i.name)
                .bind(&i.version)
                .bind($crate::store::sql::to_i64(i.length, "image length")?)
                .bind(&i.hardware_id)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "image", &key))?;
                if r.rows_affected() == 1 {
                    return Ok($crate::store::Inserted::New);
                }
                match self.image(&i.sha256).await? {
                    Some(old) if old == *i => Ok($crate::store::Inserted::Existing),
                    _ => Err($crate::store::DbError::Conflict {
                        entity: "image digest",
                        key,
                    }),
                }
            }

            async fn image(
                &self,
                sha256: &$crate::store::Digest,
            ) -> Result<Option<$crate::store::Image>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM images WHERE sha256 = $1")
                    .bind(&sha256[..])
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::image_row)
                    .transpose()
            }

            async fn image_by_name(
                &self,
                name: &str,
                version: &str,
                hardware_id: &str,
            ) -> Result<Option<$crate::store::Image>, $crate::store::DbError> {
                sqlx::query(
                    "SELECT * FROM images WHERE name = $1 AND version = $2 AND hardware_id = $3",
                )
                .bind(name)
                .bind(version)
                .bind(hardware_id)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(Self::image_row)
                .transpose()
            }

            async fn insert_package(
                &self,
                p: &$crate::store::PackageRecord,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO packages (id, model_json, created_ms) VALUES ($1, $2, $3)",
                )
                .bind(&p.id)
                .bind(&p.model_json)
                .bind(p.created_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "package", &p.id))?;
                Ok(())
            }

            async fn package(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::PackageRecord>, $crate::store::DbError> {
                use sqlx::Row as _;
                let Some(r) = sqlx::query("SELECT * FROM packages WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some($crate::store::PackageRecord {
                    id: r.try_get("id")?,
                    model_json: r.try_get("model_json")?,
                    created_ms: r.try_get("created_ms")?,
                }))
            }

            async fn assign(
                &self,
                package_id: &str,
                vin: &str,
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let r = sqlx::query(
                    "INSERT INTO assignments (package_id, vin, created_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (package_id, vin) DO NOTHING",
                )
                .bind(package_id)
                .bind(vin)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::store::sql::map_err(e, "assignment", &format!("{package_id} {vin}"))
                })?;
                Ok($crate::store::sql::inserted(r.rows_affected()))
            }

            async fn unassign(
                &self,
                package_id: &str,
                vin: &str,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query("DELETE FROM assignments WHERE package_id = $1 AND vin = $2")
                    .bind(package_id)
                    .bind(vin)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn assignments(&self, vin: &str) -> Result<Vec<String>, $crate::store::DbError> {
                Ok(sqlx::query_scalar(
                    "SELECT package_id FROM assignments a WHERE vin = $1 AND NOT EXISTS \
                     (SELECT 1 FROM rollback_blocks b WHERE b.vin = a.vin AND b.package_id = a.package_id) \
                     ORDER BY created_ms, package_id",
                )
                .bind(vin)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn put_manifest(
                &self,
                m: &$crate::store::ManifestRecord,
                installed: &[$crate::store::EcuInstalledRecord],
            ) -> Result<(), $crate::store::DbError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO vehicle_manifests (vin, hash, body, received_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (vin) DO UPDATE SET \
                     hash = excluded.hash, body = excluded.body, received_ms = excluded.received_ms",
                )
                .bind(&m.vin)
                .bind(&m.hash)
                .bind(&m.body)
                .bind(m.received_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "manifest", &m.vin))?;
                sqlx::query("DELETE FROM installed_images WHERE vin = $1")
                    .bind(&m.vin)
                    .execute(&mut *tx)
                    .await?;
                for i in installed {
                    sqlx::query(
                        "INSERT INTO installed_images (vin, ecu_serial, hardware_id, sha256, version) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&m.vin)
                    .bind(&i.ecu_serial)
                    .bind(&i.hardware_id)
                    .bind(&i.sha256[..])
                    .bind(&i.version)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::store::sql::map_err(e, "installed image", &i.ecu_serial))?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn manifest(
                &self,
                vin: &str,
            ) -> Result<Option<$crate::store::ManifestRecord>, $crate::store::DbError> {
                use sqlx::Row as _;
                let Some(r) = sqlx::query("SELECT * FROM vehicle_manifests WHERE vin = $1")
                    .bind(vin)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some($crate::store::ManifestRecord {
                    vin: r.try_get("vin")?,
                    hash: r.try_get("hash")?,
                    body: r.try_get("body")?,
                    received_ms: r.try_get("received_ms")?,
                }))
            }

            async fn use_nonce(
                &self,
                vin: &str,
                nonce: &[u8],
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let r = sqlx::query(
                    "INSERT INTO used_nonces (vin, nonce, seen_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (vin, nonce) DO NOTHING",
                )
                .bind(vin)
                .bind(nonce)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok($crate::store::sql::inserted(r.rows_affected()))
            }

            async fn prune_nonces(&self, before_ms: i64) -> Result<u64, $crate::store::DbError> {
                let r = sqlx::query("DELETE FROM used_nonces WHERE seen_ms < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn next_director_versions(
                &self,
                vin: &str,
                roles: &[&str],
            ) -> Result<Vec<u64>, $crate::store::DbError> {
                let mut tx = self.pool.begin().await?;
                let mut out = Vec::with_capacity(roles.len());
                for role in roles {
                    let v: i64 = sqlx::query_scalar(
                        "INSERT INTO director_versions (vin, role, version) VALUES ($1, $2, 1) \
                         ON CONFLICT (vin, role) DO UPDATE SET version = director_versions.version + 1 \
                         RETURNING version",
                    )
                    .bind(vin)
                    .bind(role)
                    .fetch_one(&mut *tx)
                    .await?;
                    out.push($crate::store::sql::to_u64(v, "director_versions.version")?);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn director_version(
                &self,
                vin: &str,
                role: &str,
            ) -> Result<u64, $crate::store::DbError> {
                let v: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM director_versions WHERE vin = $1 AND role = $2",
                )
                .bind(vin)
                .bind(role)
                .fetch_optional(&self.pool)
                .await?;
                $crate::store::sql::to_u64(v.unwrap_or(0), "director_versions.version")
            }

            async fn enqueue_delta(
                &self,
                from: &$crate::store::Digest,
                to: &$crate::store::Digest,
                format: &str,
                now_ms: i64,
            ) -> Result<($crate::store::DeltaJob, $crate::store::Inserted), $crate::store::DbError>
            {
                let r = sqlx::query(
                    "INSERT INTO delta_jobs (from_sha256, to_sha256, format, state, created_ms) \
                     VALUES ($1, $2, $3, 'queued', $4) \
                     ON CONFLICT (from_sha256, to_sha256, format) DO NOTHING",
                )
                .bind(&from[..])
                .bind(&to[..])
                .bind(format)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                let job = self.delta_job(from, to, format).await?.ok_or_else(|| {
                    $crate::store::DbError::NotFound {
                        entity: "delta job",
                        key: format.to_owned(),
                    }
                })?;
                Ok((job, $crate::store::sql::inserted(r.rows_affected())))
            }

            async fn claim_delta(
                &self,
                worker: &str,
                now_ms: i64,
                lease_ms: i64,
            ) -> Result<Option<$crate::store::DeltaJob>, $crate::store::DbError> {
                sqlx::query($claim)
                    .bind(worker)
                    .bind(now_ms)
                    .bind(now_ms.saturating_sub(lease_ms))
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::job_row)
                    .transpose()
            }

            async fn finish_delta(
                &self,
                id: i64,
                worker: &str,
                result: &$crate::store::Digest,
                length: u64,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query(
                    "UPDATE delta_jobs SET state = 'done', result_sha256 = $1, result_length = $2 \
                     WHERE id = $3 AND claimed_by = $4 AND state = 'running'",
                )
                .bind(&result[..])
                .bind($crate::store::sql::to_i64(length, "delta length")?)
                .bind(id)
                .bind(worker)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn fail_delta(
                &self,
                id: i64,
                worker: &str,
                error: &str,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query(
                    "UPDATE delta_jobs SET state = 'failed', error = $1 \
                     WHERE id = $2 AND claimed_by = $3 AND state = 'running'",
                )
                .bind(error)
                .bind(id)
                .bind(worker)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delta_job(
                &self,
                from: &$crate::store::Digest,
                to: &$crate::store::Digest,
                format: &str,
            ) -> Result<Option<$crate::store::DeltaJob>, $crate::store::DbError> {
                sqlx::query(concat!(
                    "SELECT ",
                    $crate::store::sql::job_cols!(),
                    " FROM delta_jobs WHERE from_sha256 = $1 AND to_sha256 = $2 AND format = $3"
                ))
                .bind(&from[..])
                .bind(&to[..])
                .bind(format)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(Self::job_row)
                .transpose()
            }

            async fn insert_report(
                &self,
                vin: &str,
                report_id: &str,
                body: &[u8],
                now_ms: i64,
            ) -> Result<$crate::store::Inserted, $crate::store::DbError> {
                let r = sqlx::query(
                    "INSERT INTO reports (vin, report_id, body, received_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (vin, report_id) DO NOTHING",
                )
                .bind(vin)
                .bind(report_id)
                .bind(body)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok($crate::store::sql::inserted(r.rows_affected()))
            }

            async fn reports(
                &self,
                vin: &str,
            ) -> Result<Vec<(String, Vec<u8>, i64)>, $crate::store::DbError> {
                Ok(sqlx::query_as(
                    "SELECT report_id, body, received_ms FROM reports WHERE vin = $1 \
                     ORDER BY received_ms, report_id",
                )
                .bind(vin)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn report(
                &self,
                vin: &str,
                report_id: &str,
            ) -> Result<Option<Vec<u8>>, $crate::store::DbError> {
                Ok(sqlx::query_scalar(
                    "SELECT body FROM reports WHERE vin = $1 AND report_id = $2",
                )
                .bind(vin)
                .bind(report_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn put_metadata(
                &self,
                m: &$crate::store::MetadataRecord,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query($crate::store::sql::PUT_METADATA)
                    .bind(m.repo.as_str())
                    .bind(&m.scope)
                    .bind(&m.name)
                    .bind($crate::store::sql::to_i64(m.version, "metadata version")?)
                    .bind(&m.body)
                    .bind(m.created_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn put_metadata_all(
                &self,
                files: &[$crate::store::MetadataRecord],
            ) -> Result<Vec<bool>, $crate::store::DbError> {
                let mut tx = self.pool.begin().await?;
                let mut out = Vec::with_capacity(files.len());
                for m in files {
                    let r = sqlx::query($crate::store::sql::PUT_METADATA)
                        .bind(m.repo.as_str())
                        .bind(&m.scope)
                        .bind(&m.name)
                        .bind($crate::store::sql::to_i64(m.version, "metadata version")?)
                        .bind(&m.body)
                        .bind(m.created_ms)
                        .execute(&mut *tx)
                        .await?;
                    out.push(r.rows_affected() > 0);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn metadata(
                &self,
                repo: $crate::store::RepoKind,
                scope: &str,
                name: &str,
            ) -> Result<Option<$crate::store::MetadataRecord>, $crate::store::DbError> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT version, body, created_ms FROM repo_metadata \
                     WHERE repo = $1 AND scope = $2 AND name = $3",
                )
                .bind(repo.as_str())
                .bind(scope)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok($crate::store::MetadataRecord {
                        repo,
                        scope: scope.to_owned(),
                        name: name.to_owned(),
                        version: $crate::store::sql::to_u64(
                            r.try_get("version")?,
                            "repo_metadata.version",
                        )?,
                        body: r.try_get("body")?,
                        created_ms: r.try_get("created_ms")?,
                    })
                })
                .transpose()
            }

            async fn signing_keys(
                &self,
                repo: $crate::store::RepoKind,
                role: &str,
            ) -> Result<Vec<$crate::store::SigningKeyRecord>, $crate::store::DbError> {
                let rows: Vec<(String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT key_id, secret, created_ms FROM signing_keys \
                     WHERE repo = $1 AND role = $2 AND retired_ms IS NULL \
                     ORDER BY created_ms, key_id",
                )
                .bind(repo.as_str())
                .bind(role)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(key_id, secret, created_ms)| $crate::store::SigningKeyRecord {
                        repo,
                        role: role.to_owned(),
                        key_id,
                        secret,
                        created_ms,
                    })
                    .collect())
            }

            async fn replace_signing_keys(
                &self,
                repo: $crate::store::RepoKind,
                role: &str,
                keys: &[$crate::store::SigningKeyRecord],
                files: &[$crate::store::MetadataRecord],
                now_ms: i64,
            ) -> Result<(), $crate::store::DbError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "UPDATE signing_keys SET retired_ms = $3 \
                     WHERE repo = $1 AND role = $2 AND retired_ms IS NULL",
                )
                .bind(repo.as_str())
                .bind(role)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                for k in keys {
                    sqlx::query(
                        "INSERT INTO signing_keys (repo, role, key_id, secret, created_ms) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(repo.as_str())
                    .bind(role)
                    .bind(&k.key_id)
                    .bind(&k.secret)
                    .bind(k.created_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::store::sql::map_err(e, "signing key", &k.key_id))?;
                }
                for m in files {
                    let r = sqlx::query($crate::store::sql::PUT_METADATA)
                        .bind(m.repo.as_str())
                        .bind(&m.scope)
                        .bind(&m.name)
                        .bind($crate::store::sql::to_i64(m.version, "metadata version")?)
                        .bind(&m.body)
                        .bind(m.created_ms)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() == 0 {
                        return Err($crate::store::DbError::Conflict {
                            entity: "metadata file",
                            key: m.name.clone(),
                        });
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn insert_campaign(
                &self,
                name: &str,
                package_id: &str,
                spec_json: &str,
                matched: u64,
                now_ms: i64,
            ) -> Result<i64, $crate::store::DbError> {
                if self.package(package_id).await?.is_none() {
                    return Err($crate::store::DbError::NotFound {
                        entity: "package",
                        key: package_id.to_owned(),
                    });
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO campaigns (name, package_id, spec, state, matched, created_ms, updated_ms) \
                     VALUES ($1, $2, $3, 'draft', $4, $5, $5) RETURNING id",
                )
                .bind(name)
                .bind(package_id)
                .bind(spec_json)
                .bind($crate::store::sql::to_i64(matched, "matched")?)
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "campaign", name))?;
                sqlx::query(
                    "INSERT INTO campaign_events (campaign_id, vin, at_ms, event, detail) \
                     VALUES ($1, NULL, $2, 'created', NULL)",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok(id)
            }

            async fn campaign(
                &self,
                id: i64,
            ) -> Result<Option<$crate::store::CampaignRecord>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM campaigns WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::campaign_row)
                    .transpose()
            }

            async fn offering_campaign_exists(&self) -> Result<bool, $crate::store::DbError> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM campaigns \
                     WHERE state IN ('running', 'waiting_approval') LIMIT 1) t",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(n > 0)
            }

            async fn campaigns(
                &self,
                limit: u32,
            ) -> Result<Vec<$crate::store::CampaignRecord>, $crate::store::DbError> {
                sqlx::query("SELECT * FROM campaigns ORDER BY id DESC LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(Self::campaign_row)
                    .collect()
            }

            async fn start_campaign(
                &self,
                id: i64,
                members: &[(String, u32)],
                wave_count: u32,
                now_ms: i64,
            ) -> Result<bool, $crate::store::DbError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query(
                    "UPDATE campaigns SET state = 'running', current_wave = 1, wave_count = $2, \
                     matched = $3, reason = NULL, updated_ms = $4 WHERE id = $1 AND state = 'draft'",
                )
                .bind(id)
                .bind(i64::from(wave_count))
                .bind($crate::store::sql::to_i64(members.len() as u64, "members")?)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 0 {
                    return Ok(false);
                }
                for chunk in members.chunks($crate::store::sql::MEMBER_BATCH) {
                    let sql = $crate::store::sql::member_insert(chunk.len());
                    let mut q = sqlx::query(&sql).bind(id);
                    for (vin, wave) in chunk {
                        q = q.bind(vin.as_str()).bind(i64::from(*wave));
                    }
                    q.execute(&mut *tx)
                        .await
                        .map_err(|e| $crate::store::sql::map_err(e, "campaign member", "batch"))?;
                }
                sqlx::query(
                    "INSERT INTO campaign_events (campaign_id, vin, at_ms, event, detail) \
                     VALUES ($1, NULL, $2, 'started', $3)",
                )
                .bind(id)
                .bind(now_ms)
                .bind(format!("{} vehicles in {wave_count} waves", members.len()))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn transition_campaign(
                &self,
                id: i64,
                from: &[$crate::store::CampaignState],
                to: $crate::store::CampaignState,
                reason: Option<&str>,
                open_next_wave: bool,
                now_ms: i64,
            ) -> Result<bool, $crate::store::DbError> {
                let sql = format!(
                    "UPDATE campaigns SET state = $2, reason = $3, \
                     current_wave = current_wave + $4, updated_ms = $5 \
                     WHERE id = $1 AND state IN ({}) RETURNING *",
                    $crate::store::sql::state_list(from)
                );
                let mut tx = self.pool.begin().await?;
                let Some(rec) = sqlx::query(&sql)
                    .bind(id)
                    .bind(to.as_str())
                    .bind(reason)
                    .bind(i64::from(open_next_wave))
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    return Ok(false);
                };
                let rec = Self::campaign_row(&rec)?;
                if to == $crate::store::CampaignState::Aborted {
                    sqlx::query(
                        "INSERT INTO campaign_events (campaign_id, vin, at_ms, event, detail) \
                         SELECT campaign_id, vin, $2, 'aborted', NULL FROM campaign_members \
                         WHERE campaign_id = $1 AND state = 'pending'",
                    )
                    .bind(id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE campaign_members SET state = 'aborted', finished_ms = $2 \
                         WHERE campaign_id = $1 AND state = 'pending'",
                    )
                    .bind(id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                let event = if open_next_wave { "wave_opened" } else { to.as_str() };
                sqlx::query(
                    "INSERT INTO campaign_events (campaign_id, vin, at_ms, event, detail) \
                     VALUES ($1, NULL, $2, $3, $4)",
                )
                .bind(id)
                .bind(now_ms)
                .bind(event)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                if to.offers() {
                    // Resumed or approved: a wave that finished meanwhile
                    // moves the campaign on now, not at a later result.
                    Self::evaluate_locked(&mut tx, &rec, None, now_ms).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn wave_counts(
                &self,
                id: i64,
            ) -> Result<Vec<$crate::store::WaveCounts>, $crate::store::DbError> {
                let rows: Vec<(i64, String, i64)> = sqlx::query_as(
                    "SELECT wave, state, COUNT(*) FROM campaign_members WHERE campaign_id = $1 \
                     GROUP BY wave, state ORDER BY wave",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::sql::fold_counts(rows)
            }

            async fn campaign_members(
                &self,
                id: i64,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<$crate::store::MemberRecord>, $crate::store::DbError> {
                sqlx::query(
                    "SELECT * FROM campaign_members WHERE campaign_id = $1 AND vin > $2 \
                     ORDER BY vin LIMIT $3",
                )
                .bind(id)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(Self::member_row)
                .collect()
            }

            async fn campaign_history(
                &self,
                id: i64,
                range: Option<(&str, &str)>,
            ) -> Result<Vec<$crate::store::CampaignEvent>, $crate::store::DbError> {
                let rows: Vec<(Option<String>, i64, String, Option<String>)> = match range {
                    Some((after, last)) => {
                        sqlx::query_as(
                            "SELECT vin, at_ms, event, detail FROM campaign_events \
                             WHERE campaign_id = $1 AND vin > $2 AND vin <= $3 ORDER BY vin, id",
                        )
                        .bind(id)
                        .bind(after)
                        .bind(last)
                        .fetch_all(&self.pool)
                        .await?
                    }
                    None => {
                        sqlx::query_as(
                            "SELECT vin, at_ms, event, detail FROM campaign_events \
                             WHERE campaign_id = $1 AND vin IS NULL ORDER BY id",
                        )
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                Ok(rows
                    .into_iter()
                    .map(|(vin, at_ms, event, detail)| $crate::store::CampaignEvent {
                        vin,
                        at_ms,
                        event,
                        detail,
                    })
                    .collect())
            }

            async fn due_offers(
                &self,
                vin: &str,
            ) -> Result<Vec<$crate::store::OfferCandidate>, $crate::store::DbError> {
                let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                    "SELECT c.id, c.package_id, c.spec, CAST(CASE WHEN EXISTS (SELECT 1 FROM rollback_blocks b \
                     WHERE b.vin = m.vin AND b.package_id = c.package_id) THEN 1 ELSE 0 END AS BIGINT) \
                     FROM campaign_members m JOIN campaigns c ON c.id = m.campaign_id \
                     WHERE m.vin = $1 AND m.state = 'pending' \
                     AND c.state IN ('running', 'waiting_approval') AND m.wave <= c.current_wave \
                     ORDER BY c.id",
                )
                .bind(vin)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(campaign_id, package_id, spec_json, blocked)| {
                        $crate::store::OfferCandidate {
                            campaign_id,
                            package_id,
                            spec_json,
                            blocked: blocked != 0,
                        }
                    })
                    .collect())
            }

            async fn claim_offer(
                &self,
                id: i64,
                vin: &str,
                package_id: &str,
                clear_block: bool,
                now_ms: i64,
            ) -> Result<bool, $crate::store::DbError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query(
                    "UPDATE campaign_members SET state = 'offered', offered_ms = $3 \
                     WHERE campaign_id = $1 AND vin = $2 AND state = 'pending' AND wave <= \
                     (SELECT current_wave FROM campaigns WHERE id = $1 \
                      AND state IN ('running', 'waiting_approval'))",
                )
                .bind(id)
                .bind(vin)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 0 {
                    return Ok(false);
                }
                if clear_block {
                    sqlx::query("DELETE FROM rollback_blocks WHERE vin = $1 AND package_id = $2")
                        .bind(vin)
                        .bind(package_id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO assignments (package_id, vin, created_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (package_id, vin) DO NOTHING",
                )
                .bind(package_id)
                .bind(vin)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "assignment", vin))?;
                sqlx::query(
                    "INSERT INTO campaign_events (campaign_id, vin, at_ms, event, detail) \
                     VALUES ($1, $2, $3, 'offered', $4)",
                )
                .bind(id)
                .bind(vin)
                .bind(now_ms)
                .bind(package_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn record_result(
                &self,
                vin: &str,
                package_id: &str,
                state: $crate::store::MemberState,
                outcome: &str,
                now_ms: i64,
            ) -> Result<Vec<$crate::store::ResultCounted>, $crate::store::DbError> {
                use $crate::store::{MemberState, ResultCounted};
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT m.campaign_id FROM campaign_members m \
                     JOIN campaigns c ON c.id = m.campaign_id \
                     WHERE m.vin = $1 AND m.state = 'offered' AND c.package_id = $2 \
                     ORDER BY m.campaign_id",
                )
                .bind(vin)
                .bind(package_id)
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::new();
                for id in ids {
                    let mut tx = self.pool.begin().await?;
                    // The campaign's row lock (a write on SQLite, which
                    // serialises writers): results of one campaign are
                    // evaluated one at a time, on every node.
                    let Some(rec) = sqlx::query(
                        "UPDATE campaigns SET updated_ms = updated_ms WHERE id = $1 RETURNING *",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    else {
                        continue;
                    };
                    let rec = Self::campaign_row(&rec)?;
                    let wave: Option<i64> = sqlx::query_scalar(
                        "UPDATE campaign_members SET state = $3, finished_ms = $4 \
                         WHERE campaign_id = $1 AND vin = $2 AND state = 'offered' RETURNING wave",
                    )
                    .bind(id)
                    .bind(vin)
                    .bind(state.as_str())
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(wave) = wave else {
                        // Counted by another call (a retry, another node).
                        continue;
                    };
                    let wave = $crate::store::sql::to_wave(wave)?;
                    sqlx::query(
                        "INSERT INTO campaign_events (campaign_id, vin, at_ms, event, detail) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(id)
                    .bind(vin)
                    .bind(now_ms)
                    .bind(state.as_str())
                    .bind(outcome)
                    .execute(&mut *tx)
                    .await?;
                    if state != MemberState::Succeeded {
                        sqlx::query($crate::store::sql::BLOCK)
                            .bind(vin)
                            .bind(package_id)
                            .bind(outcome)
                            .bind(now_ms)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| $crate::store::sql::map_err(e, "rollback block", vin))?;
                    }
                    let after =
                        Self::evaluate_locked(&mut tx, &rec, Some((wave, state)), now_ms).await?;
                    tx.commit().await?;
                    out.push(ResultCounted {
                        campaign_id: id,
                        member: state,
                        campaign: after,
                    });
                }
                Ok(out)
            }

            async fn block_package(
                &self,
                vin: &str,
                package_id: &str,
                outcome: &str,
                now_ms: i64,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query($crate::store::sql::BLOCK)
                    .bind(vin)
                    .bind(package_id)
                    .bind(outcome)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::store::sql::map_err(e, "rollback block", vin))?;
                Ok(())
            }

            async fn rollback_blocks(
                &self,
                vin: Option<&str>,
                package_id: Option<&str>,
                limit: u32,
            ) -> Result<Vec<$crate::store::RollbackBlock>, $crate::store::DbError> {
                let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                    "SELECT vin, package_id, outcome, created_ms FROM rollback_blocks \
                     WHERE ($1 IS NULL OR vin = $1) AND ($2 IS NULL OR package_id = $2) \
                     ORDER BY vin, package_id LIMIT $3",
                )
                .bind(vin)
                .bind(package_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(vin, package_id, outcome, created_ms)| $crate::store::RollbackBlock {
                        vin,
                        package_id,
                        outcome,
                        created_ms,
                    })
                    .collect())
            }

            async fn clear_rollback_block(
                &self,
                vin: &str,
                package_id: &str,
                now_ms: i64,
            ) -> Result<bool, $crate::store::DbError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query("DELETE FROM rollback_blocks WHERE vin = $1 AND package_id = $2")
                    .bind(vin)
                    .bind(package_id)
                    .execute(&mut *tx)
                    .await?;
                if r.rows_affected() == 0 {
                    return Ok(false);
                }
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE campaign_members SET state = 'offered', finished_ms = NULL \
                     WHERE vin = $1 AND state IN ('rolled_back', 'failed') AND campaign_id IN \
                     (SELECT id FROM campaigns WHERE package_id = $2 \
                      AND state IN ('running', 'waiting_approval', 'paused')) RETURNING campaign_id",
                )
                .bind(vin)
                .bind(package_id)
                .fetch_all(&mut *tx)
                .await?;
                for id in ids {
                    sqlx::query(
                        "INSERT INTO campaign_events (campaign_id, vin, at_ms, event, detail) \
                         VALUES ($1, $2, $3, 'block_cleared', NULL)",
                    )
                    .bind(id)
                    .bind(vin)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn installed(
                &self,
                vin: &str,
            ) -> Result<Vec<$crate::store::EcuInstalledRecord>, $crate::store::DbError> {
                let rows: Vec<(String, String, Vec<u8>, String)> = sqlx::query_as(
                    "SELECT ecu_serial, hardware_id, sha256, version FROM installed_images \
                     WHERE vin = $1 ORDER BY ecu_serial",
                )
                .bind(vin)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(ecu_serial, hardware_id, sha, version)| {
                        Ok($crate::store::EcuInstalledRecord {
                            ecu_serial,
                            hardware_id,
                            sha256: $crate::store::sql::digest(sha, "installed_images.sha256")?,
                            version,
                        })
                    })
                    .collect()
            }

            async fn installed_range(
                &self,
                after: &str,
                last: &str,
            ) -> Result<Vec<(String, $crate::store::EcuInstalledRecord)>, $crate::store::DbError> {
                let rows: Vec<(String, String, String, Vec<u8>, String)> = sqlx::query_as(
                    "SELECT vin, ecu_serial, hardware_id, sha256, version FROM installed_images \
                     WHERE vin > $1 AND vin <= $2 ORDER BY vin, ecu_serial",
                )
                .bind(after)
                .bind(last)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(vin, ecu_serial, hardware_id, sha, version)| {
                        Ok((
                            vin,
                            $crate::store::EcuInstalledRecord {
                                ecu_serial,
                                hardware_id,
                                sha256: $crate::store::sql::digest(sha, "installed_images.sha256")?,
                                version,
                            },
                        ))
                    })
                    .collect()
            }

            async fn insert_admin_token(
                &self,
                name: &str,
                token_sha256: &$crate::store::Digest,
                role: $crate::store::AdminRole,
                now_ms: i64,
            ) -> Result<(), $crate::store::DbError> {
                sqlx::query(
                    "INSERT INTO admin_tokens (token_sha256, name, role, created_ms) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&token_sha256[..])
                .bind(name)
                .bind(role.as_str())
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::map_err(e, "admin token", name))?;
                Ok(())
            }

            async fn admin_token_role(
                &self,
                token_sha256: &$crate::store::Digest,
            ) -> Result<Option<$crate::store::AdminRole>, $crate::store::DbError> {
                let r: Option<String> = sqlx::query_scalar(
                    "SELECT role FROM admin_tokens WHERE token_sha256 = $1 AND revoked_ms IS NULL",
                )
                .bind(&token_sha256[..])
                .fetch_optional(&self.pool)
                .await?;
                r.as_deref().map($crate::store::AdminRole::parse).transpose()
            }

            async fn revoke_admin_token(
                &self,
                name: &str,
                now_ms: i64,
            ) -> Result<bool, $crate::store::DbError> {
                let r = sqlx::query(
                    "UPDATE admin_tokens SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL",
                )
                .bind(now_ms)
                .bind(name)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn import_fleet(
                &self,
                vehicles: &[$crate::store::VehicleRecord],
                ecus: &[$crate::store::Ecu],
                now_ms: i64,
            ) -> Result<u64, $crate::store::DbError> {
                type Db = <$row as sqlx::Row>::Database;
                const BATCH: usize = $crate::store::IMPORT_BATCH;
                // Encode everything before the first write: bad input
                // leaves the database untouched.
                let hw = vehicles
                    .iter()
                    .map(|v| {
                        serde_json::to_string(&v.hardware_ids).map_err(|e| {
                            $crate::store::DbError::Invalid {
                                what: "hardware ids",
                                reason: e.to_string(),
                            }
                        })
                    })
                    .collect::<Result<Vec<String>, _>>()?;
                let mut tx = self.pool.begin().await?;
                let mut inserted = 0u64;
                for (chunk, hw) in vehicles.chunks(BATCH).zip(hw.chunks(BATCH)) {
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "INSERT INTO vehicles (vin, model, region, hardware_ids, created_ms) ",
                    );
                    q.push_values(chunk.iter().zip(hw), |mut b, (v, hw)| {
                        b.push_bind(&v.vin)
                            .push_bind(&v.model)
                            .push_bind(&v.region)
                            .push_bind(hw)
                            .push_bind(now_ms);
                    });
                    inserted += q
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            $crate::store::sql::map_err(e, "vehicle (import batch)", &chunk[0].vin)
                        })?
                        .rows_affected();
                }
                for chunk in ecus.chunks(BATCH) {
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "INSERT INTO ecus (serial, vin, hardware_id, is_primary, public_key) ",
                    );
                    q.push_values(chunk, |mut b, e| {
                        b.push_bind(&e.serial)
                            .push_bind(&e.vin)
                            .push_bind(&e.hardware_id)
                            .push_bind(e.primary)
                            .push_bind(&e.public_key);
                    });
                    q.build().execute(&mut *tx).await.map_err(|e| {
                        $crate::store::sql::map_err(e, "ECU (import batch)", &chunk[0].serial)
                    })?;
                }
                tx.commit().await?;
                Ok(inserted)
            }
        }
    };
}
pub(super) use store_impl;
