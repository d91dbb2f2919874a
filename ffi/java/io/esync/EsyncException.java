package io.esync;

/** A failure of the native library: an esync_result other than OK (its number and the handle's
 * last error are in the message), a malformed argument, or a panic caught in the native code. */
public final class EsyncException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public EsyncException(String message) {
        super(message);
    }
}
