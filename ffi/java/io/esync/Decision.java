package io.esync;

/** What {@link AgentHost#consent} decides (the C ABI's {@code esync_decision}). */
public final class Decision {
    /** The kinds (the C ABI's {@code ESYNC_DECISION_*}). */
    public static final int CONSENT = 0, DENY = 1, POSTPONE = 2;

    public final int kind;
    /** For {@link #POSTPONE}: wall time, ms since the Unix epoch. */
    public final long postponeUntilMs;
    /** For {@link #DENY} (at most 128 bytes of UTF-8 are kept). */
    public final String reason;

    private Decision(int kind, long postponeUntilMs, String reason) {
        this.kind = kind;
        this.postponeUntilMs = postponeUntilMs;
        this.reason = reason;
    }

    public static Decision consent() {
        return new Decision(CONSENT, 0, null);
    }

    public static Decision deny(String reason) {
        return new Decision(DENY, 0, reason);
    }

    public static Decision postpone(long untilWallMs) {
        return new Decision(POSTPONE, untilWallMs, null);
    }
}
