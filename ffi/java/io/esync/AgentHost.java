package io.esync;

/**
 * The host of an {@link Agent}: its device, journal and Uptane trust store (the C ABI's {@code
 * esync_agent_callbacks}, one method a callback; see {@code esync_agent::device::Device} for the
 * device contract: every mutating operation safe to repeat after a power loss, {@link #slotBegin}
 * invalidates before anything is written, {@link #slotFinish} records only after syncing, {@link
 * #activate} boots on trial, {@link #commit} makes it permanent).
 *
 * <p>Methods are called synchronously on the thread that called into the {@link Agent}, during
 * that call, and must not call back into the same Agent. A method reports a status to the Agent by
 * throwing {@link HostException}; any other exception counts as {@link HostException#FAILED} for
 * the Agent and is thrown again by the Agent method (the cause of an {@link EsyncException}).
 */
public interface AgentHost {
    /** @return the running image */
    Image running() throws Exception;

    /** Reads the running image at {@code offset} into {@code buf}; @return bytes read (0 at the end) */
    int readRunning(long offset, byte[] buf) throws Exception;

    /** @return the capacity of the staging area in bytes */
    long stagingCapacity() throws Exception;

    /** Empties the staging area and sizes it for {@code len} bytes. */
    void stagingReset(long len) throws Exception;

    /** Writes the staging area (durable on return). */
    void stagingWrite(long offset, byte[] data) throws Exception;

    /** Reads the staging area (as {@link #readRunning}). */
    int stagingRead(long offset, byte[] buf) throws Exception;

    /** Pre-install steps (stop the function, unlock flash). */
    void preInstall() throws Exception;

    /** Durably invalidates the inactive slot and prepares it for {@code len} bytes. */
    void slotBegin(long len) throws Exception;

    /** Writes the inactive slot. */
    void slotWrite(long offset, byte[] data) throws Exception;

    /** Reads the inactive slot (as {@link #readRunning}). */
    int slotRead(long offset, byte[] buf) throws Exception;

    /** Syncs the inactive slot and durably records that it holds {@code image}. */
    void slotFinish(Image image) throws Exception;

    /** @return the inactive slot's complete image, or null */
    Image inactive() throws Exception;

    /** Boots the inactive slot on trial; returns once it runs. */
    void activate() throws Exception;

    /** Self-tests the running image; @return null if it passed, else the failure's reason */
    String selfTest() throws Exception;

    /** Makes the running trial image permanent (idempotent). */
    void commit() throws Exception;

    /** @return whether the running image is on trial */
    boolean onTrial() throws Exception;

    /** Switches back to the other slot, if it holds a complete image. */
    void rollbackPrevious() throws Exception;

    /** @return backups, most recent first (at most 8); none by default */
    default Image[] backups() throws Exception {
        return new Image[0];
    }

    /** Restores the backup of {@code version} into the inactive slot and boots it (committed). */
    default void restoreBackup(String version) throws Exception {
        throw new HostException(HostException.REFUSED, "no backups");
    }

    /**
     * @return the vehicle signals (at most 32) an install precondition ({@link
     *     Agent.Config#precondition}) is evaluated over; none by default
     */
    default Signal[] signals() throws Exception {
        return new Signal[0];
    }

    /**
     * Decides on a verified download offer ({@code nowMs} wall time); by default every verified
     * offer is consented to. A failure postpones the decision by a minute.
     */
    default Decision consent(Offer offer, long nowMs) throws Exception {
        return Decision.consent();
    }

    /** @return the journal record stored last, or null if none was ever stored */
    byte[] journalLoad() throws Exception;

    /** Replaces the journal record atomically (old or new after a power loss); durable on return. */
    void journalStore(byte[] record) throws Exception;

    /**
     * Loads the Uptane trust store: {@link TrustLoader#addRole} for each stored role, {@link
     * TrustLoader#setTime} for the stored time floor; nothing if nothing is stored.
     */
    void trustLoad(TrustLoader loader) throws Exception;

    /** Durably stores a verified role's bytes. */
    void trustStoreRole(String name, byte[] bytes) throws Exception;

    /** Forgets a role. */
    void trustRemoveRole(String name) throws Exception;

    /** Durably stores the time floor (seconds since the Unix epoch). */
    void trustStoreTime(long unixSeconds) throws Exception;

    /** A log line (level 1 error, 2 warning, 3 information); ignored by default. */
    default void log(int level, String message) {}
}
