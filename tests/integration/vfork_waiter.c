/*
 * A process caught between vfork and exec, for the checkpoint tests (test_checkpoint_guards.py).
 *
 * The parent of a vfork sleeps uninterruptibly (state D) until its child execs or exits, and
 * no ptrace stop reaches it meanwhile: CRIU can seize it but never stop it, and gives up after its
 * timeout. Here the child sleeps SECONDS before it exits; the parent then sleeps for good.
 *
 *   vfork_waiter SECONDS
 */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    struct timespec pause_for = {argc > 1 ? atoi(argv[1]) : 3, 0};

    if (vfork() == 0) {
        /* Raw system calls: the child shares the parent's memory, libc's state included. */
        syscall(SYS_nanosleep, &pause_for, NULL);
        syscall(SYS_exit, 0);
    }
    for (;;)
        pause();
}
