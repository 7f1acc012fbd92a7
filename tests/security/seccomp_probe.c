/* Run inside a container by tests/security/test_seccomp.py.
 *
 *   seccomp_probe call NAME...       each NAME called with harmless arguments: "NAME ERRNO" (0: it worked)
 *   seccomp_probe read_key DESC      look up a "user" key DESC in the user keyring and read it: "read ERRNO BYTES"
 *   seccomp_probe fill_keys N        add up to N keys to the session keyring: "filled COUNT ERRNO"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEYCTL_GET_KEYRING_ID 0
#define KEYCTL_SEARCH 10
#define KEYCTL_READ 11
#define KEY_SPEC_SESSION_KEYRING (-3)
#define KEY_SPEC_USER_KEYRING (-4)

struct call { const char *name; long nr; long arg0, arg1; };
static const struct call calls[] = {
    {"init_module", SYS_init_module, 0, 0}, {"finit_module", SYS_finit_module, -1, 0},
    {"delete_module", SYS_delete_module, 0, 0},
    {"kexec_load", SYS_kexec_load, 0, 0}, {"kexec_file_load", SYS_kexec_file_load, -1, -1},
    {"open_by_handle_at", SYS_open_by_handle_at, -1, 0},
    {"add_key", SYS_add_key, 0, 0}, {"request_key", SYS_request_key, 0, 0},
    {"keyctl", SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING},
    {"bpf", SYS_bpf, -1, 0}, {"perf_event_open", SYS_perf_event_open, 0, 0},
    {"userfaultfd", SYS_userfaultfd, 0, 0},
    {"iopl", SYS_iopl, 0, 0}, {"ioperm", SYS_ioperm, 0, 0},
    {"swapon", SYS_swapon, 0, 0}, {"swapoff", SYS_swapoff, 0, 0},
    {"settimeofday", SYS_settimeofday, 0, 0}, {"clock_settime", SYS_clock_settime, -1, 0},
    {"clock_adjtime", SYS_clock_adjtime, -1, 0},
    {"syslog", SYS_syslog, 10, 0}, {"acct", SYS_acct, 0, 0},
    {"uselib", SYS_uselib, 0, 0}, {"lookup_dcookie", SYS_lookup_dcookie, 0, 0},
    {"getpid", SYS_getpid, 0, 0},
};

static int call(const char *name) {
    for (unsigned j = 0; j < sizeof(calls) / sizeof(calls[0]); j++) {
        if (strcmp(name, calls[j].name))
            continue;
        errno = 0;
        long r = syscall(calls[j].nr, calls[j].arg0, calls[j].arg1, 0L, 0L, 0L, 0L);
        if (r >= 0 && !strcmp(name, "userfaultfd"))
            close((int)r);
        printf("%s %d\n", name, r < 0 ? errno : 0);
        return 0;
    }
    printf("%s unknown\n", name);
    return 2;
}

int main(int argc, char **argv) {
    int rc = 0;
    if (argc > 2 && !strcmp(argv[1], "read_key")) {
        char buf[256];
        long id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", argv[2], 0L);
        if (id < 0) {
            printf("read %d 0\n", errno);
            return 0;
        }
        long n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, (long)sizeof(buf));
        printf("read %d %ld\n", n < 0 ? errno : 0, n < 0 ? 0 : n);
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "fill_keys")) {
        long want = atol(argv[2]), made = 0;
        int err = 0;
        char desc[64];
        for (; made < want; made++) {
            snprintf(desc, sizeof(desc), "ovzfill%ld", made);
            if (syscall(SYS_add_key, "user", desc, "x", 1L, (long)KEY_SPEC_SESSION_KEYRING) < 0) {
                err = errno;
                break;
            }
        }
        printf("filled %ld %d\n", made, err);
        return 0;
    }
    for (int i = 2; i < argc; i++)
        rc |= call(argv[i]);
    return rc;
}
