package io.esync;

/** A verified download offer, for {@link AgentHost#consent} (the C ABI's {@code esync_offer}). */
public final class Offer {
    /** The update's 16-byte id. */
    public final byte[] updateId;
    public final String targetName;
    /** The offered version. */
    public final String version;
    /** The offered image's release counter. */
    public final long releaseCounter;
    /** Length of the image. */
    public final long imageLength;
    /** Bytes that will be downloaded (the patch's length for a delta). */
    public final long downloadLength;
    /** Whether a delta is offered. */
    public final boolean isDelta;

    Offer(byte[] updateId, String targetName, String version, long releaseCounter,
            long imageLength, long downloadLength, boolean isDelta) {
        this.updateId = updateId;
        this.targetName = targetName;
        this.version = version;
        this.releaseCounter = releaseCounter;
        this.imageLength = imageLength;
        this.downloadLength = downloadLength;
        this.isDelta = isDelta;
    }
}
