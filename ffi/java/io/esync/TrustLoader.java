package io.esync;

/**
 * What {@link AgentHost#trustLoad} fills with the stored Uptane trust store (the C ABI's {@code
 * esync_trust_loader}). Valid only during that callback; a role it refuses fails the whole load.
 */
public final class TrustLoader {
    /** The native loader; 0 once the callback returned. */
    private long loader;

    private TrustLoader(long loader) {
        this.loader = loader;
    }

    /** Adds a stored role ({@code root} is the trust anchor). */
    public void addRole(String name, byte[] bytes) {
        addRole(loader, name, bytes);
    }

    /** Sets the stored time floor (seconds since the Unix epoch). */
    public void setTime(long unixSeconds) {
        setTime(loader, unixSeconds);
    }

    private static native void addRole(long loader, String name, byte[] bytes);
    private static native void setTime(long loader, long unixSeconds);
}
