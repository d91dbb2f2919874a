/*
 * An ECU Agent written in C over the esync C ABI (include/esync.h).
 *
 * Flash is simulated on files in DIR: two A/B slots (slot_a.bin,
 * slot_b.bin), a staging area (staging.bin), a boot-control file (boot.ctl,
 * replaced atomically) describing the active slot, the trial flag and the
 * image each slot holds; the journal (journal.bin, replaced atomically) and
 * the Uptane trust store (trust/role-NAME, trust/time).
 *
 * Host transport: frames arrive on stdin and leave on stdout, each as a
 * 4-byte big-endian length followed by the frame's bytes (standing in for
 * CAN-TP, DoIP or SOME/IP). Logs go to stderr. End of input stops it.
 *
 *   agent DIR VIN DEVICE_PATH HARDWARE_ID SERIAL [--fail-self-test]
 *         [--confirm-timeout-ms N]
 *
 * DIR also holds agent.key (32-byte ed25519 seed), client.pub (the Client's
 * 32-byte public key) and director_root.json (the pinned Director root).
 * --fail-self-test makes the self-test of a trial image fail (the Agent
 * then rolls back to the previous slot). --confirm-timeout-ms sets how long
 * an activated image waits for the Client's confirm before the Agent rolls
 * it back (default: the library's).
 *
 * Exit status: 0 at end of input, 1 on a usage or host error, 3 if the
 * Agent halted.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "esync.h"

#define CAPACITY (64u << 20)
#define MAX_FRAME ((1u << 20) + 16) /* esync frames: 1 MiB body + header */

struct slot_desc {
    int valid;
    struct esync_image image;
};

struct host {
    char dir[512];
    int fail_self_test;
    char active; /* 'a' or 'b' */
    int trial;
    struct slot_desc slot[2];
};

static int idx(char s) { return s == 'a' ? 0 : 1; }
static char other(char s) { return s == 'a' ? 'b' : 'a'; }

static void path(const struct host *h, const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", h->dir, name);
}

static void slot_path(const struct host *h, char s, char *out, size_t cap) {
    char name[16];
    snprintf(name, sizeof name, "slot_%c.bin", s);
    path(h, name, out, cap);
}

/* ---- small file helpers ---- */

static int write_atomic(const char *file, const uint8_t *data, size_t len) {
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0) { close(fd); return -1; }
        off += (size_t)n;
    }
    if (fsync(fd) != 0) { close(fd); return -1; }
    close(fd);
    return rename(tmp, file);
}

/* Reads a whole file (malloc'd into *out); 1 if absent, 0 on success. */
static int read_file(const char *file, uint8_t **out, size_t *len) {
    FILE *f = fopen(file, "rb");
    if (!f) return errno == ENOENT ? 1 : -1;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return -1; }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return -1; }
    uint8_t *buf = malloc((size_t)n + 1);
    if (!buf) { fclose(f); return -1; }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); fclose(f); return -1; }
    fclose(f);
    *out = buf;
    *len = (size_t)n;
    return 0;
}

static void hex(const uint8_t *b, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = 0;
}

static int unhex(const char *s, uint8_t *out, size_t n) {
    if (strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* ---- boot control: "active a|b", "trial 0|1", "slot a|b -|VERSION RC LEN SHA" ---- */

static int boot_save(const struct host *h) {
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "active %c\ntrial %d\n", h->active, h->trial);
    for (int i = 0; i < 2; i++) {
        const struct slot_desc *d = &h->slot[i];
        if (!d->valid) {
            n += snprintf(buf + n, sizeof buf - (size_t)n, "slot %c -\n", i == 0 ? 'a' : 'b');
        } else {
            char sha[65];
            hex(d->image.sha256, 32, sha);
            n += snprintf(buf + n, sizeof buf - (size_t)n, "slot %c %.*s %llu %llu %s\n",
                          i == 0 ? 'a' : 'b', (int)d->image.version_len,
                          (const char *)d->image.version,
                          (unsigned long long)d->image.release_counter,
                          (unsigned long long)d->image.length, sha);
        }
    }
    char file[600];
    path(h, "boot.ctl", file, sizeof file);
    return write_atomic(file, (const uint8_t *)buf, (size_t)n);
}

static int boot_load(struct host *h) {
    char file[600];
    path(h, "boot.ctl", file, sizeof file);
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    char line[256];
    memset(h->slot, 0, sizeof h->slot);
    while (fgets(line, sizeof line, f)) {
        char s, version[ESYNC_VERSION_MAX + 1], sha[65];
        unsigned long long rc, len;
        int t;
        if (sscanf(line, "active %c", &s) == 1) {
            h->active = s;
        } else if (sscanf(line, "trial %d", &t) == 1) {
            h->trial = t;
        } else if (sscanf(line, "slot %c %64s %llu %llu %64s", &s, version, &rc, &len, sha) == 5) {
            struct slot_desc *d = &h->slot[idx(s)];
            d->valid = 1;
            d->image.version_len = strlen(version);
            memcpy(d->image.version, version, d->image.version_len);
            d->image.release_counter = rc;
            d->image.length = len;
            if (unhex(sha, d->image.sha256, 32) != 0) { fclose(f); return -1; }
        }
    }
    fclose(f);
    return (h->active == 'a' || h->active == 'b') ? 0 : -1;
}

/* ---- positioned file I/O ---- */

static esync_host_status pread_file(const char *file, uint64_t off, uint64_t limit, uint8_t *buf,
                                    size_t len, size_t *read_out) {
    if (off >= limit) { *read_out = 0; return ESYNC_HOST_OK; }
    if (len > limit - off) len = (size_t)(limit - off);
    int fd = open(file, O_RDONLY);
    if (fd < 0) return ESYNC_HOST_FAILED;
    ssize_t n = pread(fd, buf, len, (off_t)off);
    close(fd);
    if (n < 0) return ESYNC_HOST_FAILED;
    *read_out = (size_t)n;
    return ESYNC_HOST_OK;
}

static esync_host_status pwrite_file(const char *file, uint64_t off, const uint8_t *data,
                                     size_t len) {
    if (off > CAPACITY || len > CAPACITY - off) return ESYNC_HOST_NO_SPACE;
    int fd = open(file, O_WRONLY | O_CREAT, 0644);
    if (fd < 0) return ESYNC_HOST_FAILED;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, data + done, len - done, (off_t)(off + done));
        if (n < 0) { close(fd); return ESYNC_HOST_FAILED; }
        done += (size_t)n;
    }
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

static esync_host_status truncate_file(const char *file) {
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return ESYNC_HOST_FAILED;
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

/* ---- device callbacks ---- */

static esync_host_status cb_running(void *ud, struct esync_image *out) {
    struct host *h = ud;
    const struct slot_desc *d = &h->slot[idx(h->active)];
    if (!d->valid) return ESYNC_HOST_FAILED;
    *out = d->image;
    return ESYNC_HOST_OK;
}

static esync_host_status cb_read_running(void *ud, uint64_t off, uint8_t *buf, size_t len,
                                         size_t *n) {
    struct host *h = ud;
    char file[600];
    slot_path(h, h->active, file, sizeof file);
    return pread_file(file, off, h->slot[idx(h->active)].image.length, buf, len, n);
}

static uint64_t cb_staging_capacity(void *ud) {
    (void)ud;
    return CAPACITY;
}

static esync_host_status cb_staging_reset(void *ud, uint64_t len) {
    struct host *h = ud;
    if (len > CAPACITY) return ESYNC_HOST_NO_SPACE;
    char file[600];
    path(h, "staging.bin", file, sizeof file);
    return truncate_file(file);
}

static esync_host_status cb_staging_write(void *ud, uint64_t off, const uint8_t *data, size_t len) {
    struct host *h = ud;
    char file[600];
    path(h, "staging.bin", file, sizeof file);
    return pwrite_file(file, off, data, len);
}

static esync_host_status cb_staging_read(void *ud, uint64_t off, uint8_t *buf, size_t len,
                                         size_t *n) {
    struct host *h = ud;
    char file[600];
    path(h, "staging.bin", file, sizeof file);
    return pread_file(file, off, CAPACITY, buf, len, n);
}

static esync_host_status cb_pre_install(void *ud) {
    (void)ud;
    return ESYNC_HOST_OK;
}

static esync_host_status cb_slot_begin(void *ud, uint64_t len) {
    struct host *h = ud;
    if (len > CAPACITY) return ESYNC_HOST_NO_SPACE;
    h->slot[idx(other(h->active))].valid = 0;
    if (boot_save(h) != 0) return ESYNC_HOST_FAILED;
    char file[600];
    slot_path(h, other(h->active), file, sizeof file);
    return truncate_file(file);
}

static esync_host_status cb_slot_write(void *ud, uint64_t off, const uint8_t *data, size_t len) {
    struct host *h = ud;
    char file[600];
    slot_path(h, other(h->active), file, sizeof file);
    return pwrite_file(file, off, data, len);
}

static esync_host_status cb_slot_read(void *ud, uint64_t off, uint8_t *buf, size_t len,
                                      size_t *n) {
    struct host *h = ud;
    char file[600];
    slot_path(h, other(h->active), file, sizeof file);
    return pread_file(file, off, CAPACITY, buf, len, n);
}

static esync_host_status cb_slot_finish(void *ud, const struct esync_image *image) {
    struct host *h = ud;
    struct slot_desc *d = &h->slot[idx(other(h->active))];
    d->valid = 1;
    d->image = *image;
    return boot_save(h) == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

static esync_host_status cb_inactive(void *ud, struct esync_image *out, bool *present) {
    struct host *h = ud;
    const struct slot_desc *d = &h->slot[idx(other(h->active))];
    *present = d->valid != 0;
    if (d->valid) *out = d->image;
    return ESYNC_HOST_OK;
}

static esync_host_status cb_activate(void *ud) {
    struct host *h = ud;
    if (!h->slot[idx(other(h->active))].valid) return ESYNC_HOST_REFUSED;
    h->active = other(h->active);
    h->trial = 1;
    /* A real ECU reboots into the trial image here. */
    return boot_save(h) == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

static esync_host_status cb_self_test(void *ud, bool *passed, uint8_t *reason, size_t cap,
                                      size_t *reason_len) {
    struct host *h = ud;
    if (h->fail_self_test && h->trial) {
        static const char msg[] = "injected self-test failure";
        size_t n = sizeof msg - 1 < cap ? sizeof msg - 1 : cap;
        memcpy(reason, msg, n);
        *reason_len = n;
        *passed = false;
    } else {
        *passed = true;
    }
    return ESYNC_HOST_OK;
}

static esync_host_status cb_commit(void *ud) {
    struct host *h = ud;
    h->trial = 0;
    return boot_save(h) == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

static esync_host_status cb_on_trial(void *ud, bool *out) {
    struct host *h = ud;
    *out = h->trial != 0;
    return ESYNC_HOST_OK;
}

static esync_host_status cb_rollback_previous(void *ud) {
    struct host *h = ud;
    if (!h->slot[idx(other(h->active))].valid) return ESYNC_HOST_REFUSED;
    h->active = other(h->active);
    h->trial = 0;
    return boot_save(h) == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

static esync_host_status cb_backups(void *ud, struct esync_image *out, size_t cap, size_t *count) {
    (void)ud;
    (void)out;
    (void)cap;
    *count = 0; /* this ECU keeps no backups beyond its A/B slots */
    return ESYNC_HOST_OK;
}

static esync_host_status cb_restore_backup(void *ud, const uint8_t *version, size_t len) {
    (void)ud;
    (void)version;
    (void)len;
    return ESYNC_HOST_REFUSED;
}

static esync_host_status cb_signals(void *ud, struct esync_signal *out, size_t cap, size_t *count) {
    (void)ud;
    if (cap < 2) return ESYNC_HOST_FAILED;
    memset(out, 0, 2 * sizeof *out);
    memcpy(out[0].name, "speed", 5);
    out[0].name_len = 5;
    out[0].kind = ESYNC_SIGNAL_INT;
    out[0].int_value = 0;
    memcpy(out[1].name, "gear", 4);
    out[1].name_len = 4;
    out[1].kind = ESYNC_SIGNAL_TEXT;
    memcpy(out[1].text, "P", 1);
    out[1].text_len = 1;
    *count = 2;
    return ESYNC_HOST_OK;
}

/* ---- journal ---- */

static esync_host_status cb_journal_load(void *ud, uint8_t *buf, size_t cap, size_t *len,
                                         bool *present) {
    struct host *h = ud;
    char file[600];
    path(h, "journal.bin", file, sizeof file);
    uint8_t *data = NULL;
    size_t n = 0;
    int rc = read_file(file, &data, &n);
    if (rc == 1) { *present = false; return ESYNC_HOST_OK; }
    if (rc != 0) return ESYNC_HOST_FAILED;
    if (n > cap) { free(data); *len = n; return ESYNC_HOST_BUFFER_TOO_SMALL; }
    memcpy(buf, data, n);
    free(data);
    *len = n;
    *present = true;
    return ESYNC_HOST_OK;
}

static esync_host_status cb_journal_store(void *ud, const uint8_t *data, size_t len) {
    struct host *h = ud;
    char file[600];
    path(h, "journal.bin", file, sizeof file);
    return write_atomic(file, data, len) == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

/* ---- Uptane trust store: trust/role-NAME, trust/time ---- */

static esync_host_status cb_trust_load(void *ud, struct esync_trust_loader *loader) {
    struct host *h = ud;
    char dir[600];
    path(h, "trust", dir, sizeof dir);
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
    struct dirent *e;
    esync_host_status st = ESYNC_HOST_OK;
    while (st == ESYNC_HOST_OK && (e = readdir(d)) != NULL) {
        char file[1200];
        uint8_t *data = NULL;
        size_t n = 0;
        snprintf(file, sizeof file, "%s/%s", dir, e->d_name);
        if (strncmp(e->d_name, "role-", 5) == 0 && strstr(e->d_name, ".tmp") == NULL) {
            if (read_file(file, &data, &n) != 0) { st = ESYNC_HOST_FAILED; break; }
            const char *name = e->d_name + 5;
            if (esync_trust_loader_add_role(loader, (const uint8_t *)name, strlen(name), data, n) !=
                ESYNC_RESULT_OK)
                st = ESYNC_HOST_FAILED;
            free(data);
        } else if (strcmp(e->d_name, "time") == 0) {
            if (read_file(file, &data, &n) != 0) { st = ESYNC_HOST_FAILED; break; }
            char text[32] = {0};
            memcpy(text, data, n < sizeof text - 1 ? n : sizeof text - 1);
            free(data);
            char *end = NULL;
            long long t = strtoll(text, &end, 10);
            if (end == text) { st = ESYNC_HOST_FAILED; break; } /* corrupt: refuse */
            esync_trust_loader_set_time(loader, (int64_t)t);
        }
    }
    closedir(d);
    return st;
}

static esync_host_status cb_trust_store_role(void *ud, const uint8_t *name, size_t name_len,
                                             const uint8_t *bytes, size_t len) {
    struct host *h = ud;
    char dir[600], file[1200];
    path(h, "trust", dir, sizeof dir);
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/role-%.*s", dir, (int)name_len, (const char *)name);
    return write_atomic(file, bytes, len) == 0 ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

static esync_host_status cb_trust_remove_role(void *ud, const uint8_t *name, size_t name_len) {
    struct host *h = ud;
    char file[1200];
    snprintf(file, sizeof file, "%s/trust/role-%.*s", h->dir, (int)name_len, (const char *)name);
    return (unlink(file) == 0 || errno == ENOENT) ? ESYNC_HOST_OK : ESYNC_HOST_FAILED;
}

static esync_host_status cb_trust_store_time(void *ud, int64_t unix_seconds) {
    struct host *h = ud;
    char dir[600], file[700], text[32];
    path(h, "trust", dir, sizeof dir);
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/time", dir);
    int n = snprintf(text, sizeof text, "%lld", (long long)unix_seconds);
    return write_atomic(file, (const uint8_t *)text, (size_t)n) == 0 ? ESYNC_HOST_OK
                                                                    : ESYNC_HOST_FAILED;
}

/* ---- consent and logging ---- */

static esync_host_status cb_consent(void *ud, const struct esync_offer *offer, uint64_t now_ms,
                                    struct esync_decision *out) {
    (void)ud;
    (void)now_ms;
    fprintf(stderr, "agent: offer of %.*s (%llu bytes to download, %s)\n",
            (int)offer->version_len, (const char *)offer->version,
            (unsigned long long)offer->download_length, offer->is_delta ? "delta" : "full");
    if (offer->download_length > CAPACITY) {
        static const char msg[] = "larger than the staging area";
        out->kind = ESYNC_DECISION_DENY;
        memcpy(out->reason, msg, sizeof msg - 1);
        out->reason_len = sizeof msg - 1;
    } else {
        out->kind = ESYNC_DECISION_CONSENT;
    }
    return ESYNC_HOST_OK;
}

static void cb_log(void *ud, esync_log_level level, const uint8_t *msg, size_t len) {
    (void)ud;
    fprintf(stderr, "agent[%u]: %.*s\n", (unsigned)level, (int)len, (const char *)msg);
}

/* ---- clocks and transport ---- */

static uint64_t clock_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int read_exact(int fd, uint8_t *buf, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t n = read(fd, buf + off, len - off);
        if (n == 0) return 1; /* end of input */
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

static int write_frame(const uint8_t *data, size_t len) {
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    if (fwrite(hdr, 1, 4, stdout) != 4 || fwrite(data, 1, len, stdout) != len) return -1;
    return fflush(stdout) == 0 ? 0 : -1;
}

static void report(struct esync_agent *agent, esync_result r, const char *what) {
    char msg[256];
    size_t n = 0;
    if (esync_result_message(r, (uint8_t *)msg, sizeof msg, &n) != ESYNC_RESULT_OK) n = 0;
    fprintf(stderr, "agent: %s: %.*s\n", what, (int)n, msg);
    if (agent && esync_agent_last_error(agent, (uint8_t *)msg, sizeof msg, &n) == ESYNC_RESULT_OK &&
        n > 0)
        fprintf(stderr, "agent:   %.*s\n", (int)n, msg);
}

/* Sends every frame waiting; marks final reports sent once written. */
static int drain(struct esync_agent *agent) {
    const uint8_t *frame;
    size_t len;
    uint64_t id;
    bool has_id;
    esync_result r;
    while ((r = esync_agent_next_frame(agent, &frame, &len, &id, &has_id)) == ESYNC_RESULT_OK) {
        if (write_frame(frame, len) != 0) return -1;
        if (has_id && (r = esync_agent_mark_sent(agent, id)) != ESYNC_RESULT_OK) {
            report(agent, r, "mark_sent");
            return -1;
        }
    }
    return r == ESYNC_RESULT_NO_FRAME ? 0 : -1;
}

static int load_key(const struct host *h, const char *name, uint8_t out[32]) {
    char file[600];
    uint8_t *data = NULL;
    size_t n = 0;
    path(h, name, file, sizeof file);
    if (read_file(file, &data, &n) != 0) return -1;
    int ok = n == 32;
    if (ok) memcpy(out, data, 32);
    free(data);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: agent DIR VIN DEVICE_PATH HARDWARE_ID SERIAL [--fail-self-test]"
                        " [--confirm-timeout-ms N]\n");
        return 1;
    }
    static struct host h; /* zeroed */
    snprintf(h.dir, sizeof h.dir, "%s", argv[1]);
    long long confirm_timeout_ms = -1;
    for (int i = 6; i < argc; i++) {
        if (strcmp(argv[i], "--fail-self-test") == 0) {
            h.fail_self_test = 1;
        } else if (strcmp(argv[i], "--confirm-timeout-ms") == 0 && i + 1 < argc) {
            confirm_timeout_ms = strtoll(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "agent: unknown argument %s\n", argv[i]);
            return 1;
        }
    }
    if (boot_load(&h) != 0) {
        fprintf(stderr, "agent: cannot read %s/boot.ctl\n", h.dir);
        return 1;
    }

    uint8_t agent_key[32], client_key[32];
    uint8_t *root = NULL;
    size_t root_len = 0;
    char file[600];
    path(&h, "director_root.json", file, sizeof file);
    if (load_key(&h, "agent.key", agent_key) != 0 || load_key(&h, "client.pub", client_key) != 0 ||
        read_file(file, &root, &root_len) != 0) {
        fprintf(stderr, "agent: cannot read keys or the Director root in %s\n", h.dir);
        free(root);
        return 1;
    }

    struct esync_agent_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vin = (const uint8_t *)argv[2];
    cfg.vin_len = strlen(argv[2]);
    cfg.device_path = (const uint8_t *)argv[3];
    cfg.device_path_len = strlen(argv[3]);
    cfg.hardware_id = (const uint8_t *)argv[4];
    cfg.hardware_id_len = strlen(argv[4]);
    cfg.serial = (const uint8_t *)argv[5];
    cfg.serial_len = strlen(argv[5]);
    cfg.agent_key = agent_key;
    cfg.agent_key_len = sizeof agent_key;
    cfg.client_key = client_key;
    cfg.client_key_len = sizeof client_key;
    cfg.envelope_sequence = clock_ms(CLOCK_REALTIME) * 1000u;
    cfg.verification = ESYNC_VERIFY_UPTANE_PARTIAL;
    cfg.director_root = root;
    cfg.director_root_len = root_len;
    cfg.patching = ESYNC_PATCH_BUILTIN;
    cfg.uptane_schemes = ESYNC_SCHEME_ED25519; /* this Director signs with ed25519 */
    esync_agent_limits_default(&cfg.limits);
    cfg.limits.write_quantum = 4096;
    if (confirm_timeout_ms >= 0) cfg.limits.confirm_timeout_ms = (uint64_t)confirm_timeout_ms;

    struct esync_agent_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.userdata = &h;
    cb.running = cb_running;
    cb.read_running = cb_read_running;
    cb.staging_capacity = cb_staging_capacity;
    cb.staging_reset = cb_staging_reset;
    cb.staging_write = cb_staging_write;
    cb.staging_read = cb_staging_read;
    cb.pre_install = cb_pre_install;
    cb.slot_begin = cb_slot_begin;
    cb.slot_write = cb_slot_write;
    cb.slot_read = cb_slot_read;
    cb.slot_finish = cb_slot_finish;
    cb.inactive = cb_inactive;
    cb.activate = cb_activate;
    cb.self_test = cb_self_test;
    cb.commit = cb_commit;
    cb.on_trial = cb_on_trial;
    cb.rollback_previous = cb_rollback_previous;
    cb.backups = cb_backups;
    cb.restore_backup = cb_restore_backup;
    cb.signals = cb_signals;
    cb.journal_load = cb_journal_load;
    cb.journal_store = cb_journal_store;
    cb.trust_load = cb_trust_load;
    cb.trust_store_role = cb_trust_store_role;
    cb.trust_remove_role = cb_trust_remove_role;
    cb.trust_store_time = cb_trust_store_time;
    cb.consent = cb_consent;
    cb.log = cb_log;

    struct esync_agent *agent = NULL;
    struct esync_step step;
    esync_result r = esync_agent_new(&cfg, &cb, clock_ms(CLOCK_MONOTONIC),
                                     clock_ms(CLOCK_REALTIME), &agent, &step);
    free(root); /* copied by esync_agent_new */
    if (r != ESYNC_RESULT_OK) {
        report(NULL, r, "esync_agent_new");
        return r == ESYNC_RESULT_HALTED ? 3 : 1;
    }
    int status = 0;
    /* The frame buffer is static: the heap is the library's (and the few
       small reads of journal and trust store files). */
    static uint8_t buf[MAX_FRAME];
    if (drain(agent) != 0) status = 1;
    while (status == 0) {
        int timeout = -1;
        if (step.poll) {
            timeout = 0;
        } else if (step.has_deadline) {
            uint64_t now = clock_ms(CLOCK_MONOTONIC);
            timeout = step.deadline_ms > now ? (int)(step.deadline_ms - now) : 0;
        }
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN, .revents = 0};
        int ready = poll(&pfd, 1, timeout);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) { status = 1; break; }
        if (ready > 0) {
            uint8_t hdr[4];
            int rc = read_exact(STDIN_FILENO, hdr, 4);
            if (rc == 1) break; /* end of input */
            size_t len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
            if (rc != 0 || len > MAX_FRAME || read_exact(STDIN_FILENO, buf, len) != 0) {
                fprintf(stderr, "agent: bad frame on input\n");
                status = 1;
                break;
            }
            r = esync_agent_receive(agent, buf, len, clock_ms(CLOCK_MONOTONIC),
                                    clock_ms(CLOCK_REALTIME), &step);
        } else {
            r = esync_agent_poll(agent, clock_ms(CLOCK_MONOTONIC), clock_ms(CLOCK_REALTIME), &step);
        }
        if (r != ESYNC_RESULT_OK) {
            report(agent, r, "step");
            status = r == ESYNC_RESULT_HALTED ? 3 : 1;
            break;
        }
        if (drain(agent) != 0) status = 1;
    }
    esync_agent_free(agent);
    esync_agent_free(NULL); /* accepted */
    return status;
}
