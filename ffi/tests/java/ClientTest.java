// The Java test of the JNI wrapper (run by ffi/tests/c_client.rs): io.esync.Client installs a
// package on the C Agent example (a child process; its stdin/stdout are the bus, 4-byte
// big-endian length before each frame), and Rust errors arrive as EsyncException.
//
//   java -cp CLASSES ClientTest LIBESYNC_FFI_SO DIR DEVICE_PATH AGENT_CMD [ARGS...]
//
// DIR holds client.key, agent.pub, package.json and blob-N.bin (as for examples/c/client).
// Prints the report and exits 0 when the package was installed and the errors were exceptions.

import io.esync.Client;
import io.esync.EsyncException;
import java.io.DataInputStream;
import java.io.OutputStream;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

public class ClientTest {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static void send(OutputStream out, byte[] frame) throws Exception {
        int n = frame.length;
        out.write(new byte[] {(byte) (n >>> 24), (byte) (n >>> 16), (byte) (n >>> 8), (byte) n});
        out.write(frame);
        out.flush();
    }

    public static void main(String[] args) throws Exception {
        System.load(args[0]);
        Path dir = Paths.get(args[1]);
        String device = args[2];
        List<String> agentCmd = Arrays.asList(args).subList(3, args.length);
        byte[] seed = Files.readAllBytes(dir.resolve("client.key"));
        byte[] agentPub = Files.readAllBytes(dir.resolve("agent.pub"));
        byte[] pkg = Files.readAllBytes(dir.resolve("package.json"));

        // A Rust error arrives as a Java exception: a 5-byte seed.
        try {
            new Client(new byte[5], 1, device, agentPub, null).close();
            throw new AssertionError("a 5-byte client seed was accepted");
        } catch (EsyncException e) {
            check(e.result() == 2 && e.getMessage().contains("client_key"),
                    "INVALID_ARGUMENT naming the field: " + e);
            System.out.println("exception as expected: " + e.getMessage());
        }

        Process agent = new ProcessBuilder(agentCmd)
                .redirectError(ProcessBuilder.Redirect.INHERIT)
                .start();
        DataInputStream in = new DataInputStream(agent.getInputStream());
        OutputStream out = agent.getOutputStream();
        LinkedBlockingQueue<byte[]> frames = new LinkedBlockingQueue<>();
        Thread reader = new Thread(() -> {
            try {
                for (;;) {
                    int n = in.readInt();
                    check(n >= 0 && n <= (1 << 20) + 16, "frame of " + n + " bytes");
                    byte[] f = new byte[n];
                    in.readFully(f);
                    frames.put(f);
                }
            } catch (Exception end) {
                // end of the bus
            }
        });
        reader.setDaemon(true);
        reader.start();

        String report = null;
        try (Client c = new Client(seed, Client.wall(), device, agentPub, null)) {
            c.presence(device, true);
            c.queryInventory(device, new byte[16]);
            boolean started = false;
            for (;;) {
                long[] need;
                while ((need = c.nextNeed()) != null) {
                    Path blob = dir.resolve("blob-" + need[0] + ".bin");
                    try (RandomAccessFile f = new RandomAccessFile(blob.toFile(), "r")) {
                        byte[] buf = new byte[(int) Math.min(need[2], f.length() - need[1])];
                        f.seek(need[1]);
                        f.readFully(buf);
                        c.provideBlob(need[0], need[1], buf);
                    }
                }
                // The journal of this call is "stored" before its frames leave.
                check(c.journal() != null || !started, "a journal record once a campaign runs");
                byte[][] frame;
                while ((frame = c.nextFrame()) != null) {
                    check(new String(frame[0], StandardCharsets.UTF_8).equals(device),
                            "frames go to the Agent");
                    send(out, frame[1]);
                }
                report = c.nextReport();
                if (report != null) {
                    break;
                }
                long deadline = c.deadline();
                long wait = deadline < 0 ? 60_000 : Math.max(0, deadline - Client.mono());
                byte[] f = frames.poll(wait, TimeUnit.MILLISECONDS);
                if (f == null) {
                    check(deadline >= 0, "no frame within 60 s and no deadline");
                    c.poll();
                    continue;
                }
                int input = c.receive(f);
                if (!started && input == Client.INPUT_HANDLED) {
                    started = true;
                    // A package that does not decode: an exception, nothing sent.
                    try {
                        c.start("{\"not\":\"a package\"}".getBytes(StandardCharsets.UTF_8));
                        throw new AssertionError("a malformed package was accepted");
                    } catch (EsyncException e) {
                        check(e.result() == 10 && e.getMessage().startsWith("esync_result 10 "),
                                "REFUSED: " + e);
                        System.out.println("exception as expected: " + e.getMessage());
                    }
                    c.start(pkg);
                }
            }
            // A closed Client is an exception too, never a crash.
        }
        out.close();
        int status = agent.waitFor();
        check(status == 0, "the C Agent's exit status " + status);
        System.out.println("report " + report);
        check(report.contains("\"outcome\":\"Installed\""), "installed: " + report);
        System.out.println("JAVA CLIENT OK");
    }
}
