// The Java test of io.esync.Agent (run by ffi/tests/java_agent.rs): an A/B ECU Agent in Java, its
// flash simulated on files exactly as examples/c/agent/agent.c does (slot_a.bin, slot_b.bin,
// staging.bin, boot.ctl, journal.bin, trust/role-NAME, trust/time), so the Rust rig that plays the
// Client to the C Agent plays it to this one over the same bus: stdin/stdout, a 4-byte big-endian
// length before each frame. Logs go to stderr. Its signals (speed 0, gear P) meet the install
// precondition speed == 0 && gear == "P"; its consent checks what arrived of the offer.
//
//   java -cp CLASSES AgentTest LIB DIR VIN DEVICE_PATH HARDWARE_ID SERIAL [--fail-self-test]
//        [--confirm-timeout-ms N]
//   java -cp CLASSES AgentTest --errors LIB DIR VIN DEVICE_PATH HARDWARE_ID SERIAL [--panic-probe]
//
// The first runs the Agent until end of input (exit 0; 3 if it halted). The second checks that
// failures arrive as EsyncException (a Rust error with its result number, a host callback's
// exception as the cause, a caught panic), prints "exception as expected" for each and "ERRORS OK".

import io.esync.Agent;
import io.esync.AgentHost;
import io.esync.Decision;
import io.esync.EsyncException;
import io.esync.HostException;
import io.esync.Image;
import io.esync.Offer;
import io.esync.Signal;
import io.esync.TrustLoader;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

public class AgentTest {
    static final long CAPACITY = 64L << 20;
    static final int MAX_FRAME = (1 << 20) + 16;

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    /** The A/B flash on files (as agent.c). */
    static class FileHost implements AgentHost {
        final Path dir;
        final boolean failSelfTest;
        char active;
        boolean trial;
        final Image[] slot = new Image[2];

        FileHost(Path dir, boolean failSelfTest) throws IOException {
            this.dir = dir;
            this.failSelfTest = failSelfTest;
            for (String line : Files.readAllLines(dir.resolve("boot.ctl"))) {
                String[] f = line.trim().split("\\s+");
                if (f.length == 2 && f[0].equals("active")) {
                    active = f[1].charAt(0);
                } else if (f.length == 2 && f[0].equals("trial")) {
                    trial = !f[1].equals("0");
                } else if (f.length == 6 && f[0].equals("slot")) {
                    slot[idx(f[1].charAt(0))] = new Image(f[2], Long.parseLong(f[3]),
                            Long.parseLong(f[4]), unhex(f[5]));
                }
            }
            check(active == 'a' || active == 'b', "boot.ctl names the active slot");
        }

        static int idx(char s) {
            return s == 'a' ? 0 : 1;
        }

        char other() {
            return active == 'a' ? 'b' : 'a';
        }

        Path slotFile(char s) {
            return dir.resolve("slot_" + s + ".bin");
        }

        static String hex(byte[] b) {
            StringBuilder s = new StringBuilder();
            for (byte x : b) {
                s.append(String.format("%02x", x & 0xff));
            }
            return s.toString();
        }

        static byte[] unhex(String s) {
            byte[] b = new byte[s.length() / 2];
            for (int i = 0; i < b.length; i++) {
                b[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
            }
            return b;
        }

        static void writeAtomic(Path file, byte[] data) throws IOException {
            Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
            try (RandomAccessFile f = new RandomAccessFile(tmp.toFile(), "rw")) {
                f.setLength(0);
                f.write(data);
                f.getFD().sync();
            }
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }

        void bootSave() throws IOException {
            StringBuilder s = new StringBuilder();
            s.append("active ").append(active).append("\ntrial ").append(trial ? 1 : 0).append('\n');
            for (int i = 0; i < 2; i++) {
                char c = i == 0 ? 'a' : 'b';
                Image d = slot[i];
                if (d == null) {
                    s.append("slot ").append(c).append(" -\n");
                } else {
                    s.append("slot ").append(c).append(' ').append(d.version).append(' ')
                            .append(d.releaseCounter).append(' ').append(d.length).append(' ')
                            .append(hex(d.sha256)).append('\n');
                }
            }
            writeAtomic(dir.resolve("boot.ctl"), s.toString().getBytes(StandardCharsets.UTF_8));
        }

        static int pread(Path file, long off, long limit, byte[] buf) throws IOException {
            if (off >= limit) {
                return 0;
            }
            int len = (int) Math.min(buf.length, limit - off);
            try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "r")) {
                f.seek(off);
                int n = f.read(buf, 0, len);
                return Math.max(n, 0);
            }
        }

        static void pwrite(Path file, long off, byte[] data) throws Exception {
            if (off > CAPACITY || data.length > CAPACITY - off) {
                throw new HostException(HostException.NO_SPACE, "over the capacity");
            }
            try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
                f.seek(off);
                f.write(data);
                f.getFD().sync();
            }
        }

        static void truncate(Path file) throws IOException {
            try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
                f.setLength(0);
                f.getFD().sync();
            }
        }

        @Override public Image running() throws Exception {
            Image d = slot[idx(active)];
            if (d == null) {
                throw new HostException(HostException.FAILED, "the active slot holds no image");
            }
            return d;
        }

        @Override public int readRunning(long off, byte[] buf) throws Exception {
            return pread(slotFile(active), off, slot[idx(active)].length, buf);
        }

        @Override public long stagingCapacity() {
            return CAPACITY;
        }

        @Override public void stagingReset(long len) throws Exception {
            if (len > CAPACITY) {
                throw new HostException(HostException.NO_SPACE, "staging");
            }
            truncate(dir.resolve("staging.bin"));
        }

        @Override public void stagingWrite(long off, byte[] data) throws Exception {
            pwrite(dir.resolve("staging.bin"), off, data);
        }

        @Override public int stagingRead(long off, byte[] buf) throws Exception {
            return pread(dir.resolve("staging.bin"), off, CAPACITY, buf);
        }

        @Override public void preInstall() {}

        @Override public void slotBegin(long len) throws Exception {
            if (len > CAPACITY) {
                throw new HostException(HostException.NO_SPACE, "slot");
            }
            slot[idx(other())] = null;
            bootSave();
            truncate(slotFile(other()));
        }

        @Override public void slotWrite(long off, byte[] data) throws Exception {
            pwrite(slotFile(other()), off, data);
        }

        @Override public int slotRead(long off, byte[] buf) throws Exception {
            return pread(slotFile(other()), off, CAPACITY, buf);
        }

        @Override public void slotFinish(Image image) throws Exception {
            slot[idx(other())] = image;
            bootSave();
        }

        @Override public Image inactive() {
            return slot[idx(other())];
        }

        @Override public void activate() throws Exception {
            if (slot[idx(other())] == null) {
                throw new HostException(HostException.REFUSED, "no image to activate");
            }
            active = other();
            trial = true;
            bootSave(); // a real ECU reboots into the trial image here
        }

        @Override public String selfTest() {
            return failSelfTest && trial ? "injected self-test failure" : null;
        }

        @Override public void commit() throws Exception {
            trial = false;
            bootSave();
        }

        @Override public boolean onTrial() {
            return trial;
        }

        @Override public void rollbackPrevious() throws Exception {
            if (slot[idx(other())] == null) {
                throw new HostException(HostException.REFUSED, "no image to roll back to");
            }
            active = other();
            trial = false;
            bootSave();
        }

        @Override public Signal[] signals() {
            return new Signal[] {Signal.of("speed", 0L), Signal.of("gear", "P")};
        }

        /** Consents to the update the rig offers, checking what arrived of the offer. */
        @Override public Decision consent(Offer offer, long nowMs) {
            System.err.println("java agent: offer of " + offer.version + " (" + offer.downloadLength
                    + " bytes to download, " + (offer.isDelta ? "delta" : "full") + ")");
            if (offer.updateId.length != 16 || !offer.version.equals("2.0.0") || !offer.isDelta
                    || offer.downloadLength <= 0 || offer.downloadLength >= offer.imageLength
                    || offer.releaseCounter != 2 || offer.targetName.isEmpty()) {
                return Decision.deny("not the offer the rig makes");
            }
            if (offer.downloadLength > CAPACITY) {
                return Decision.deny("larger than the staging area");
            }
            return Decision.consent();
        }

        @Override public byte[] journalLoad() throws Exception {
            try {
                return Files.readAllBytes(dir.resolve("journal.bin"));
            } catch (NoSuchFileException none) {
                return null;
            }
        }

        @Override public void journalStore(byte[] record) throws IOException {
            writeAtomic(dir.resolve("journal.bin"), record);
        }

        @Override public void trustLoad(TrustLoader loader) throws IOException {
            Path trust = dir.resolve("trust");
            if (!Files.isDirectory(trust)) {
                return;
            }
            try (DirectoryStream<Path> d = Files.newDirectoryStream(trust)) {
                for (Path p : d) {
                    String name = p.getFileName().toString();
                    if (name.startsWith("role-") && !name.endsWith(".tmp")) {
                        loader.addRole(name.substring(5), Files.readAllBytes(p));
                    } else if (name.equals("time")) {
                        loader.setTime(Long.parseLong(
                                new String(Files.readAllBytes(p), StandardCharsets.UTF_8).trim()));
                    }
                }
            }
        }

        @Override public void trustStoreRole(String name, byte[] bytes) throws IOException {
            Files.createDirectories(dir.resolve("trust"));
            writeAtomic(dir.resolve("trust").resolve("role-" + name), bytes);
        }

        @Override public void trustRemoveRole(String name) throws IOException {
            Files.deleteIfExists(dir.resolve("trust").resolve("role-" + name));
        }

        @Override public void trustStoreTime(long unixSeconds) throws IOException {
            Files.createDirectories(dir.resolve("trust"));
            writeAtomic(dir.resolve("trust").resolve("time"),
                    Long.toString(unixSeconds).getBytes(StandardCharsets.UTF_8));
        }

        @Override public void log(int level, String message) {
            System.err.println("java agent[" + level + "]: " + message);
        }
    }

    static Agent.Config config(Path dir, String[] a, int at) throws IOException {
        Agent.Config c = new Agent.Config();
        c.vin = a[at];
        c.devicePath = a[at + 1];
        c.hardwareId = a[at + 2];
        c.serial = a[at + 3];
        c.agentSeed = Files.readAllBytes(dir.resolve("agent.key"));
        c.clientKey = Files.readAllBytes(dir.resolve("client.pub"));
        c.directorRoot = Files.readAllBytes(dir.resolve("director_root.json"));
        c.envelopeSequence = System.currentTimeMillis() * 1000L;
        c.writeQuantum = 4096;
        // Installs only at standstill in park: over this host's signals.
        c.precondition = "speed == 0 && gear == \"P\"";
        c.uptaneSchemes = 1; // ESYNC_SCHEME_ED25519: this Director signs with ed25519
        return c;
    }

    static EsyncException expect(String what, Runnable r) {
        try {
            r.run();
        } catch (EsyncException e) {
            System.out.println("exception as expected (" + what + "): result " + e.result() + ": "
                    + e.getMessage() + (e.getCause() == null ? "" : "; cause " + e.getCause()));
            return e;
        }
        throw new AssertionError(what + ": no exception");
    }

    /** The failures of the Agent wrapper, each an EsyncException; the JVM runs on. */
    static void errors(Path dir, String[] args) throws Exception {
        Agent.Config good = config(dir, args, 3);
        boolean probe = args.length > 7 && args[7].equals("--panic-probe");

        // A Rust error: its result number (2: an invalid argument) and the field it names.
        Agent.Config bad = config(dir, args, 3);
        bad.agentSeed = new byte[5];
        FileHost plain = new FileHost(dir, false);
        EsyncException e = expect("a 5-byte seed", () -> new Agent(bad, plain).close());
        check(e.result() == 2 && e.getMessage().contains("agent_key"), "INVALID_ARGUMENT: " + e);

        // A host callback that throws inside the Rust call: FAILED for the Agent (its trust store
        // cannot be opened: 8), the exception the cause.
        IllegalStateException boom = new IllegalStateException("trust store probe");
        FileHost throwing = new FileHost(dir, false) {
            @Override public void trustLoad(TrustLoader l) {
                throw boom;
            }
        };
        e = expect("trustLoad throws", () -> new Agent(good, throwing).close());
        check(e.result() == 8 && e.getCause() == boom, "TRUST_STORE with the cause: " + e);

        // A status the host reports (a power loss while loading the journal): the Agent halts.
        FileHost brownOut = new FileHost(dir, false) {
            @Override public byte[] journalLoad() throws HostException {
                throw new HostException(HostException.POWER_LOSS, "brown-out");
            }
        };
        e = expect("journalLoad power loss", () -> new Agent(good, brownOut).close());
        check(e.result() == 6 && e.getCause() == null, "HALTED: " + e);

        // A TrustLoader kept past its callback is refused, not a dangling pointer.
        TrustLoader[] kept = new TrustLoader[1];
        Agent a = new Agent(good, new FileHost(dir, false) {
            @Override public void trustLoad(TrustLoader l) throws IOException {
                kept[0] = l;
                super.trustLoad(l);
            }
        });
        check(a.nextFrame() == null, "no frame from a fresh Agent");
        e = expect("a TrustLoader outside trustLoad", () -> kept[0].setTime(1));
        check(e.getMessage().contains("outside"), "the loader is stale: " + e);
        a.close();
        e = expect("a closed Agent", a::poll);
        check(e.result() == -1 && e.getMessage().contains("closed"), "closed: " + e);

        if (probe) {
            e = expect("a panic in a JNI method", io.esync.PanicProbe::inJni);
            check(e.result() == -1 && e.getMessage().contains("panic"), "panic: " + e);
            e = expect("a panic in a C ABI entry point", io.esync.PanicProbe::inAbi);
            check(e.result() == 9, "ESYNC_RESULT_PANIC: " + e);
        }
        // The library and the JVM still work.
        try (Agent ok = new Agent(good, plain)) {
            ok.poll();
        }
        System.out.println("ERRORS OK");
    }

    public static void main(String[] args) throws Exception {
        if (args[0].equals("--errors")) {
            System.load(args[1]);
            errors(Paths.get(args[2]), args);
            return;
        }
        System.load(args[0]);
        Path dir = Paths.get(args[1]);
        boolean failSelfTest = false;
        Agent.Config c = config(dir, args, 2);
        for (int i = 6; i < args.length; i++) {
            if (args[i].equals("--fail-self-test")) {
                failSelfTest = true;
            } else if (args[i].equals("--confirm-timeout-ms") && i + 1 < args.length) {
                c.confirmTimeoutMs = Long.parseLong(args[++i]);
            } else {
                throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        FileHost host = new FileHost(dir, failSelfTest);
        DataInputStream in = new DataInputStream(System.in);
        DataOutputStream out = new DataOutputStream(System.out);
        LinkedBlockingQueue<byte[]> frames = new LinkedBlockingQueue<>();
        byte[] end = new byte[0];
        Thread reader = new Thread(() -> {
            try {
                for (;;) {
                    int n = in.readInt();
                    check(n >= 0 && n <= MAX_FRAME, "frame of " + n + " bytes");
                    byte[] f = new byte[n];
                    in.readFully(f);
                    frames.put(f);
                }
            } catch (Exception eof) {
                frames.add(end);
            }
        });
        reader.setDaemon(true);
        reader.start();
        int status = 0;
        try (Agent agent = new Agent(c, host)) {
            for (;;) {
                Agent.Frame f;
                while ((f = agent.nextFrame()) != null) {
                    out.writeInt(f.bytes.length);
                    out.write(f.bytes);
                    out.flush();
                    if (f.outboxId >= 0) {
                        agent.markSent(f.outboxId);
                    }
                }
                long wait;
                if (agent.pollPending()) {
                    wait = 0;
                } else if (agent.deadline() >= 0) {
                    wait = Math.max(0, agent.deadline() - io.esync.Client.mono());
                } else {
                    wait = Long.MAX_VALUE;
                }
                byte[] frame = frames.poll(wait, TimeUnit.MILLISECONDS);
                if (frame == end) {
                    break;
                }
                try {
                    if (frame != null) {
                        agent.receive(frame);
                    } else {
                        agent.poll();
                    }
                } catch (EsyncException e) {
                    System.err.println("java agent: " + e.getMessage());
                    status = e.result() == 6 ? 3 : 1;
                    break;
                }
            }
        }
        System.exit(status);
    }
}
