/*
 * A minimal Client host in C over the esync C ABI (include/esync.h, built
 * with esync-ffi's feature `client`): a gateway that installs one package
 * on one Agent.
 *
 * Host transport: the Agent runs as a child process (AGENT_CMD...) whose
 * stdin and stdout are the bus, each frame a 4-byte big-endian length
 * followed by its bytes (standing in for CAN-TP, DoIP or SOME/IP); the
 * C Agent example (examples/c/agent) speaks exactly that.
 *
 *   client DIR DEVICE_PATH PACKAGE_ID -- AGENT_CMD [ARGS...]
 *
 * DIR holds client.key (the Client's 32-byte ed25519 seed), agent.pub (the
 * Agent's 32-byte public key), package.json (the verified, downloaded
 * package: esync-client's ReadyPackage as JSON) and blob-N.bin (the bytes
 * of the package's blob N). The campaign journal is DIR/journal.bin
 * (replaced atomically). The final package report is written to
 * DIR/report.json.
 *
 * The host asks the Agent for its inventory, starts the package once the
 * Agent answered, answers the Client's blob reads from the blob files,
 * polls at the deadlines it is given, and stops at the final report.
 *
 * Exit status: 0 when a final report was written, 1 on a usage or host
 * error, 2 if the Client failed.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "esync.h"

#define MAX_FRAME ((1u << 20) + 16)

struct host {
    char dir[512];
};

static uint64_t clock_ms(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}
static uint64_t mono(void) { return clock_ms(CLOCK_MONOTONIC); }
static uint64_t wall(void) { return clock_ms(CLOCK_REALTIME); }

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 1 at a clean end of input, 0 when `n` bytes were read, -1 on error. */
static int read_all(int fd, uint8_t *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return got == 0 ? 1 : -1;
        got += (size_t)r;
    }
    return 0;
}

static int write_atomic(const char *file, const uint8_t *data, size_t len) {
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return rename(tmp, file);
}

/* Reads exactly `cap` bytes of a small file; 0 on success. */
static int read_exact_file(const char *file, uint8_t *out, size_t cap) {
    int fd = open(file, O_RDONLY);
    if (fd < 0) return -1;
    int r = read_all(fd, out, cap);
    close(fd);
    return r;
}

/* ---- callbacks ---- */

static esync_host_status journal_load(void *ud, uint8_t *buf, size_t cap, size_t *len,
                                      bool *present) {
    const struct host *h = ud;
    char file[600];
    snprintf(file, sizeof file, "%s/journal.bin", h->dir);
    FILE *f = fopen(file, "rb");
    if (!f) {
        if (errno != ENOENT) return ESYNC_HOST_FAILED;
        *present = false;
        *len = 0;
        return ESYNC_HOST_OK;
    }
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return ESYNC_HOST_FAILED; }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return ESYNC_HOST_FAILED; }
    if ((size_t)n > cap) {
        fclose(f);
        *len = (size_t)n;
        return ESYNC_HOST_BUFFER_TOO_SMALL;
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) return ESYNC_HOST_FAILED;
    *present = true;
    *len = got;
    return ESYNC_HOST_OK;
}

static esync_host_status journal_store(void *ud, const uint8_t *rec, size_t len) {
    const struct host *h = ud;
    char file[600];
    snprintf(file, sizeof file, "%s/journal.bin", h->dir);
    return write_atomic(file, rec, len) == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

static void log_line(void *ud, esync_log_level level, const uint8_t *msg, size_t len) {
    (void)ud;
    fprintf(stderr, "client[%u]: %.*s\n", (unsigned)level, (int)len, (const char *)msg);
}

/* ---- the host loop ---- */

struct bus {
    int to_agent;   /* the Agent's stdin */
    int from_agent; /* the Agent's stdout */
    pid_t pid;
};

static int spawn(char **argv, struct bus *bus) {
    int in[2], out[2];
    if (pipe(in) != 0) return -1;
    if (pipe(out) != 0) { close(in[0]); close(in[1]); return -1; }
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]); close(in[1]); close(out[0]); close(out[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    bus->to_agent = in[1];
    bus->from_agent = out[0];
    bus->pid = pid;
    return 0;
}

static void report_error(esync_client *c, const char *what, esync_result r) {
    uint8_t buf[512];
    size_t n = 0;
    if (c == NULL || esync_client_last_error(c, buf, sizeof buf, &n) != ESYNC_RESULT_OK) n = 0;
    fprintf(stderr, "client: %s failed (%u): %.*s\n", what, (unsigned)r, (int)n,
            (const char *)buf);
}

/* Sends every waiting frame to the Agent; 0 on success. */
static int flush_frames(esync_client *c, const struct bus *bus) {
    const uint8_t *to, *frame;
    size_t to_len, len;
    while (esync_client_next_frame(c, &to, &to_len, &frame, &len) == ESYNC_RESULT_OK) {
        uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                          (uint8_t)len};
        /* One Agent on this bus: `to` names it. */
        if (write_all(bus->to_agent, hdr, 4) != 0 || write_all(bus->to_agent, frame, len) != 0)
            return -1;
    }
    return 0;
}

/* Answers every waiting blob read from DIR/blob-N.bin; 0 on success. */
static int serve_needs(esync_client *c, const struct host *h, esync_client_step *step) {
    esync_client_need need;
    while (esync_client_next_need(c, &need) == ESYNC_RESULT_OK) {
        char file[600];
        snprintf(file, sizeof file, "%s/blob-%llu.bin", h->dir, (unsigned long long)need.blob);
        int fd = open(file, O_RDONLY);
        if (fd < 0) { perror(file); return -1; }
        uint8_t *buf = malloc(need.len ? need.len : 1);
        if (!buf) { close(fd); return -1; }
        ssize_t n = pread(fd, buf, need.len, (off_t)need.offset);
        close(fd);
        if (n < 0) { free(buf); return -1; }
        esync_result r = esync_client_provide_blob(c, need.blob, need.offset, buf, (size_t)n,
                                                   mono(), wall(), step);
        free(buf);
        if (r != ESYNC_RESULT_OK) { report_error(c, "provide_blob", r); return -1; }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: client DIR DEVICE_PATH PACKAGE_ID -- AGENT_CMD [ARGS...]\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    struct host h;
    snprintf(h.dir, sizeof h.dir, "%s", argv[1]);
    const char *device = argv[2];
    const char *package_id = argv[3];

    char file[600];
    uint8_t seed[32], agent_pub[32];
    snprintf(file, sizeof file, "%s/client.key", h.dir);
    if (read_exact_file(file, seed, sizeof seed) != 0) { perror(file); return 1; }
    snprintf(file, sizeof file, "%s/agent.pub", h.dir);
    if (read_exact_file(file, agent_pub, sizeof agent_pub) != 0) { perror(file); return 1; }
    snprintf(file, sizeof file, "%s/package.json", h.dir);
    FILE *pf = fopen(file, "rb");
    if (!pf) { perror(file); return 1; }
    uint8_t *package = NULL;
    size_t package_len = 0;
    {
        if (fseek(pf, 0, SEEK_END) != 0) { fclose(pf); return 1; }
        long n = ftell(pf);
        if (n <= 0 || fseek(pf, 0, SEEK_SET) != 0) { fclose(pf); return 1; }
        package = malloc((size_t)n);
        if (!package || fread(package, 1, (size_t)n, pf) != (size_t)n) {
            fclose(pf);
            free(package);
            return 1;
        }
        package_len = (size_t)n;
        fclose(pf);
    }

    esync_client_agent agent = {
        .device_path = (const uint8_t *)device,
        .device_path_len = strlen(device),
        .key = agent_pub,
        .key_len = sizeof agent_pub,
    };
    esync_client_config config = {
        .client_key = seed,
        .client_key_len = sizeof seed,
        .envelope_sequence = wall(), /* grows across restarts */
        .agents = &agent,
        .agents_len = 1,
    };
    esync_client_callbacks cbs = {
        .userdata = &h,
        .journal_load = journal_load,
        .journal_store = journal_store,
        .log = log_line,
    };

    struct bus bus;
    if (spawn(&argv[5], &bus) != 0) { perror("spawn"); free(package); return 1; }

    int status = 2;
    esync_client *c = NULL;
    esync_client_step step;
    esync_result r = esync_client_new(&config, &cbs, mono(), wall(), &c, &step);
    if (r != ESYNC_RESULT_OK) { report_error(NULL, "esync_client_new", r); goto out; }
    r = esync_client_presence(c, (const uint8_t *)device, strlen(device), true);
    if (r != ESYNC_RESULT_OK) { report_error(c, "presence", r); goto out; }
    const uint8_t nonce[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    r = esync_client_query_inventory(c, (const uint8_t *)device, strlen(device), nonce, mono(),
                                     wall(), &step);
    if (r != ESYNC_RESULT_OK) { report_error(c, "query_inventory", r); goto out; }

    int started = 0;
    uint8_t *frame = malloc(MAX_FRAME);
    if (!frame) goto out;
    for (;;) {
        if (serve_needs(c, &h, &step) != 0) break;
        if (flush_frames(c, &bus) != 0) { fprintf(stderr, "client: bus write failed\n"); break; }
        if (step.reports > 0) {
            const uint8_t *json;
            size_t len;
            if (esync_client_next_report(c, &json, &len) == ESYNC_RESULT_OK) {
                snprintf(file, sizeof file, "%s/report.json", h.dir);
                if (write_atomic(file, json, len) != 0) { perror(file); break; }
                fprintf(stderr, "client: report %.*s\n", (int)len, (const char *)json);
                r = esync_client_report_delivered(c, (const uint8_t *)package_id,
                                                  strlen(package_id));
                if (r != ESYNC_RESULT_OK) { report_error(c, "report_delivered", r); break; }
                status = 0;
                break;
            }
        }
        int timeout = -1;
        if (step.has_deadline) {
            uint64_t now = mono();
            timeout = step.deadline_ms > now ? (int)(step.deadline_ms - now) : 0;
        }
        struct pollfd p = {.fd = bus.from_agent, .events = POLLIN};
        int n = poll(&p, 1, timeout);
        if (n < 0 && errno != EINTR) break;
        if (n <= 0) {
            r = esync_client_poll(c, mono(), wall(), &step);
            if (r != ESYNC_RESULT_OK) { report_error(c, "poll", r); break; }
            continue;
        }
        uint8_t hdr[4];
        int e = read_all(bus.from_agent, hdr, 4);
        if (e != 0) { fprintf(stderr, "client: the Agent left the bus\n"); break; }
        size_t len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
        if (len > MAX_FRAME || read_all(bus.from_agent, frame, len) != 0) {
            fprintf(stderr, "client: bad frame of %zu bytes\n", len);
            break;
        }
        r = esync_client_receive(c, frame, len, mono(), wall(), &step);
        if (r != ESYNC_RESULT_OK) { report_error(c, "receive", r); break; }
        if (!started && step.input == ESYNC_INPUT_HANDLED) {
            /* The Agent answered the inventory query: start the package. */
            started = 1;
            if (flush_frames(c, &bus) != 0) break;
            r = esync_client_start(c, package, package_len, mono(), wall(), &step);
            if (r != ESYNC_RESULT_OK) { report_error(c, "start", r); break; }
        }
    }
    free(frame);
out:
    esync_client_free(c);
    free(package);
    close(bus.to_agent); /* end of input: the Agent exits */
    int ws = 0;
    waitpid(bus.pid, &ws, 0);
    close(bus.from_agent);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        fprintf(stderr, "client: the Agent exited with status %d\n", ws);
        if (status == 0) status = 2;
    }
    return status;
}
