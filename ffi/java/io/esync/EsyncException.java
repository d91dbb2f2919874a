package io.esync;

/**
 * A failure of the native library: an esync_result other than OK ({@link #result}, with the
 * handle's last error in the message), a malformed argument, a panic caught in the native code,
 * or an exception a host callback threw during the call (its {@link #getCause}).
 */
public final class EsyncException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The esync_result number, or -1 when the failure is not an esync_result. */
    private final int result;

    public EsyncException(String message) {
        this(-1, message, null);
    }

    public EsyncException(int result, String message, Throwable cause) {
        super(message, cause);
        this.result = result;
    }

    /**
     * @return the esync_result number (stable; e.g. 2 an invalid argument, 6 halted, 8 the trust
     *     store, 9 a panic caught in the C ABI), or -1 when the failure is not an esync_result
     */
    public int result() {
        return result;
    }
}
