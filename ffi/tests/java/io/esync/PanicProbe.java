package io.esync;

/**
 * Test only: native methods that panic on purpose, in the library built with the non-default
 * cargo feature {@code panic-probe} (production code has no panic a Java caller can reach).
 */
public final class PanicProbe {
    private PanicProbe() {}

    /** Panics in a JNI method body. */
    public static native void inJni();

    /** Panics under the guard of the C ABI's entry points (esync_result 9). */
    public static native void inAbi();
}
