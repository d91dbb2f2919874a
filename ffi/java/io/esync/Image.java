package io.esync;

/** An installed image's description (the C ABI's {@code esync_image}). */
public final class Image {
    /** Software version (at most 64 bytes of UTF-8). */
    public final String version;
    /** Release counter (anti-rollback). */
    public final long releaseCounter;
    /** Image length in bytes. */
    public final long length;
    /** SHA-256 of the image (32 bytes). */
    public final byte[] sha256;

    public Image(String version, long releaseCounter, long length, byte[] sha256) {
        this.version = version;
        this.releaseCounter = releaseCounter;
        this.length = length;
        this.sha256 = sha256.clone();
    }
}
