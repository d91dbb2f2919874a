package io.esync;

/**
 * The esync Agent over the C ABI's Agent handle (libesync_ffi built with feature {@code jni}),
 * its device, journal and trust store the {@link AgentHost}'s. Load the library first ({@code
 * System.load} or {@code System.loadLibrary("esync_ffi")}).
 *
 * <p>The host drives it as a C host drives {@code esync_agent}: it hands over every frame its bus
 * received ({@link #receive}), calls {@link #poll} while {@link #pollPending} and at {@link
 * #deadline}, sends every frame {@link #nextFrame} gives and, for a final report, calls {@link
 * #markSent} once its transport took it. Metadata verification (Uptane partial, against the
 * pinned Director root) and patch application are built in.
 *
 * <p>Every failure is an {@link EsyncException}; {@link EsyncException#result} 6 (halted) means:
 * close it and create it again, which recovers from the journal. One thread at a time.
 */
public final class Agent implements AutoCloseable {
    /** No input (a poll, a reconnection). */
    public static final int INPUT_NONE = 0;
    /** The frame was verified and handled. */
    public static final int INPUT_HANDLED = 1;
    /** The frame was verified; the Agent ignored its message (the reason was logged). */
    public static final int INPUT_IGNORED = 2;
    /** The frame was refused by envelope verification; nothing changed. */
    public static final int INPUT_REFUSED = 3;

    /** How to create an Agent. */
    public static final class Config {
        public String devicePath;
        public String hardwareId;
        public String serial;
        public String vin;
        /** The Agent's 32-byte ed25519 seed (envelopes and Uptane version reports). */
        public byte[] agentSeed;
        /** The Client's 32-byte ed25519 public key: the only sender accepted. */
        public byte[] clientKey;
        /** First envelope sequence number; it must grow across restarts. */
        public long envelopeSequence;
        /** The Director root pinned at provisioning (JSON), stored when the store has no root. */
        public byte[] directorRoot;
        /** Rollback if no confirm comes within this time (ms); 0 never; -1 the library's default. */
        public long confirmTimeoutMs = -1;
        /** Bytes written to the slot per poll; 0 the library's default. */
        public long writeQuantum;
        /**
         * Install precondition over the host's {@link AgentHost#signals} (esync's precondition
         * language, e.g. {@code speed == 0 && gear == "P"}); non-null makes the Agent
         * safety-critical.
         */
        public String precondition;
        /** Uptane key schemes accepted (the C ABI's {@code ESYNC_SCHEME_*} bits); 0 all built. */
        public int uptaneSchemes;
    }

    /** A frame to send; {@link #outboxId} is -1 unless it is a final report. */
    public static final class Frame {
        public final byte[] bytes;
        public final long outboxId;

        Frame(byte[] bytes, long outboxId) {
            this.bytes = bytes;
            this.outboxId = outboxId;
        }
    }

    private long handle;

    /**
     * Creates (recovers) an Agent: opens the Uptane verifier on the host's trust store and
     * recovers from the host's journal. The host must stay usable until {@link #close}.
     */
    public Agent(Config c, AgentHost host) {
        handle = create(c.devicePath, c.hardwareId, c.serial, c.vin, c.agentSeed, c.clientKey,
                c.envelopeSequence, c.directorRoot, c.confirmTimeoutMs, c.writeQuantum,
                c.precondition, c.uptaneSchemes, host, Client.mono(), Client.wall());
    }

    /** @return what became of the frame ({@code INPUT_*}) */
    public int receive(byte[] frame) {
        return receive(handle, frame, Client.mono(), Client.wall());
    }

    public void poll() {
        poll(handle, Client.mono(), Client.wall());
    }

    /** The transport reconnected: unsent final reports are sealed again. */
    public void reconnected() {
        reconnected(handle, Client.mono(), Client.wall());
    }

    /** @return the next frame to send, or null */
    public Frame nextFrame() {
        long[] id = new long[1];
        byte[] f = nextFrame(handle, id);
        return f == null ? null : new Frame(f, id[0]);
    }

    /** The transport took the final report of {@code outboxId}: it leaves the journal. */
    public void markSent(long outboxId) {
        markSent(handle, outboxId);
    }

    /** @return whether {@link #poll} should be called now */
    public boolean pollPending() {
        return pollPending(handle);
    }

    /** @return the monotonic time (ms, as {@link Client#mono}) to call {@link #poll} at, or -1 */
    public long deadline() {
        return deadline(handle);
    }

    @Override
    public void close() {
        long h = handle;
        handle = 0;
        free(h);
    }

    private static native long create(String device, String hardwareId, String serial, String vin,
            byte[] agentSeed, byte[] clientKey, long sequence, byte[] directorRoot,
            long confirmTimeoutMs, long writeQuantum, String precondition, int uptaneSchemes,
            AgentHost host, long mono, long wall);
    private static native void free(long h);
    private static native int receive(long h, byte[] frame, long mono, long wall);
    private static native void poll(long h, long mono, long wall);
    private static native void reconnected(long h, long mono, long wall);
    private static native byte[] nextFrame(long h, long[] outboxId);
    private static native void markSent(long h, long outboxId);
    private static native boolean pollPending(long h);
    private static native long deadline(long h);
}
