package io.esync;

/** A vehicle signal (the C ABI's {@code esync_signal}): a name and one typed value. */
public final class Signal {
    /** The value kinds (the C ABI's {@code ESYNC_SIGNAL_*}). */
    public static final int BOOL = 0, INT = 1, FLOAT = 2, TEXT = 3;

    /** Name (at most 32 bytes of UTF-8). */
    public final String name;
    /** Which value field holds the value. */
    public final int kind;
    public final boolean boolValue;
    public final long intValue;
    public final double floatValue;
    /** For {@link #TEXT} (at most 64 bytes of UTF-8). */
    public final String text;

    private Signal(String name, int kind, boolean b, long i, double f, String text) {
        this.name = name;
        this.kind = kind;
        this.boolValue = b;
        this.intValue = i;
        this.floatValue = f;
        this.text = text;
    }

    public static Signal of(String name, boolean value) {
        return new Signal(name, BOOL, value, 0, 0, null);
    }

    public static Signal of(String name, long value) {
        return new Signal(name, INT, false, value, 0, null);
    }

    public static Signal of(String name, double value) {
        return new Signal(name, FLOAT, false, 0, value, null);
    }

    public static Signal of(String name, String value) {
        return new Signal(name, TEXT, false, 0, 0, value);
    }
}
