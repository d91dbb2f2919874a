package io.esync;

/**
 * What an {@link AgentHost} callback throws to report a status to the Agent (the C ABI's {@code
 * ESYNC_HOST_*}): the Agent handles it as its device contract says (a power loss halts it). Any
 * other exception a callback throws counts as {@link #FAILED} and is thrown again, as the cause of
 * an {@link EsyncException}, by the {@link Agent} method during which it was thrown.
 */
public final class HostException extends Exception {
    private static final long serialVersionUID = 1L;

    /** The operation failed (I/O or flash error); it may succeed later. */
    public static final int FAILED = 1;
    /** The request is not valid for the device's state. */
    public static final int REFUSED = 2;
    /** The staging area or the slot is too small. */
    public static final int NO_SPACE = 3;
    /** Power was lost during the operation: the Agent halts at once. */
    public static final int POWER_LOSS = 4;

    private final int status;

    public HostException(int status, String message) {
        super(message);
        this.status = status;
    }

    /** @return the status ({@code FAILED}, {@code REFUSED}, {@code NO_SPACE}, {@code POWER_LOSS}) */
    public int status() {
        return status;
    }
}
