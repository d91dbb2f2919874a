package io.esync;

/**
 * The esync Client over the C ABI's Client handle (libesync_ffi built with feature {@code jni}).
 * Load the library first ({@code System.load} or {@code System.loadLibrary("esync_ffi")}).
 *
 * <p>The host drives it as a C host drives {@code esync_client}: it hands over every frame its
 * bus received ({@link #receive}), calls {@link #poll} at {@link #deadline}, answers blob reads
 * ({@link #nextNeed}, {@link #provideBlob}) and sends every frame {@link #nextFrame} gives. The
 * campaign journal is kept in memory: after each call, store {@link #journal} durably before
 * sending that call's frames, and pass it to the constructor after a restart.
 *
 * <p>Every failure is an {@link EsyncException}. One thread at a time.
 */
public final class Client implements AutoCloseable {
    /** The frame was verified and handled. */
    public static final int INPUT_HANDLED = 1;
    /** The frame was refused by envelope verification. */
    public static final int INPUT_REFUSED = 3;

    private long handle;

    /**
     * Creates (recovers) a Client talking to one Agent.
     *
     * @param clientSeed the Client's 32-byte ed25519 seed
     * @param envelopeSequence first envelope sequence number (grows across restarts)
     * @param device the Agent's device path
     * @param agentKey the Agent's 32-byte ed25519 public key
     * @param journal the journal record stored last, or null
     */
    public Client(byte[] clientSeed, long envelopeSequence, String device, byte[] agentKey,
            byte[] journal) {
        handle = create(clientSeed, envelopeSequence, device, agentKey, journal, mono(), wall());
    }

    public static long mono() {
        return System.nanoTime() / 1_000_000L;
    }

    public static long wall() {
        return System.currentTimeMillis();
    }

    public void presence(String device, boolean connected) {
        presence(handle, device, connected);
    }

    public void queryInventory(String device, byte[] nonce) {
        queryInventory(handle, device, nonce, mono(), wall());
    }

    /** @return what became of the frame ({@code INPUT_*}) */
    public int receive(byte[] frame) {
        return receive(handle, frame, mono(), wall());
    }

    public void poll() {
        poll(handle, mono(), wall());
    }

    /** Starts a verified, downloaded package (esync-client's ReadyPackage as JSON). */
    public void start(byte[] packageJson) {
        start(handle, packageJson, mono(), wall());
    }

    public void provideBlob(long blob, long offset, byte[] data) {
        provideBlob(handle, blob, offset, data, mono(), wall());
    }

    /** @return {deviceUtf8, frame}, or null */
    public byte[][] nextFrame() {
        return nextFrame(handle);
    }

    /** @return {blob, offset, len}, or null */
    public long[] nextNeed() {
        return nextNeed(handle);
    }

    /** @return the final package report (JSON), or null */
    public String nextReport() {
        return nextReport(handle);
    }

    /** @return the monotonic time (ms, as {@link #mono}) to call {@link #poll} at, or -1 */
    public long deadline() {
        return deadline(handle);
    }

    /** @return the journal record, or null if none was stored */
    public byte[] journal() {
        return journal(handle);
    }

    @Override
    public void close() {
        long h = handle;
        handle = 0;
        free(h);
    }

    private static native long create(byte[] seed, long sequence, String device, byte[] agentKey,
            byte[] journal, long mono, long wall);
    private static native void free(long h);
    private static native void presence(long h, String device, boolean connected);
    private static native void queryInventory(long h, String device, byte[] nonce, long mono,
            long wall);
    private static native int receive(long h, byte[] frame, long mono, long wall);
    private static native void poll(long h, long mono, long wall);
    private static native void start(long h, byte[] packageJson, long mono, long wall);
    private static native void provideBlob(long h, long blob, long offset, byte[] data, long mono,
            long wall);
    private static native byte[][] nextFrame(long h);
    private static native long[] nextNeed(long h);
    private static native String nextReport(long h);
    private static native long deadline(long h);
    private static native byte[] journal(long h);
}
