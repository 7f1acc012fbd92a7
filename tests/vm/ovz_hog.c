/*
 * Resource hogs for the VM tier's limit tests (tests/vm/test_limits_v2.py).
 *
 * Built statically on the controller and copied into busybox containers on the VMs.
 *
 *   ovz_hog mem MIB       allocate and touch MIB mebibytes, one at a time, printing progress;
 *                         prints "mem-done" if nothing stopped it (an OOM kill does)
 *   ovz_hog fork COUNT    fork up to COUNT children that wait; stop at the first refused fork,
 *                         print "forked=N errno=NAME", then kill and reap the children (bounded,
 *                         self-cleaning: a fork bomb that cannot outlive the test)
 *   ovz_hog spin SECONDS  burn CPU for SECONDS of wall-clock time, then exit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int mem(long mib)
{
	long i;

	for (i = 1; i <= mib; i++) {
		char *chunk = malloc(1 << 20);

		if (!chunk) {
			printf("mem-enomem at=%ld\n", i);
			return 2;
		}
		memset(chunk, (int)(i & 0xff) | 1, 1 << 20);
		if (i % 16 == 0) {
			printf("mem=%ld\n", i);
			fflush(stdout);
		}
	}
	printf("mem-done\n");
	return 0;
}

static int fork_many(long count)
{
	pid_t *pids = calloc((size_t)count, sizeof(pid_t));
	long n = 0, i;
	int err = 0;

	if (!pids)
		return 2;
	while (n < count) {
		pid_t pid = fork();

		if (pid < 0) {
			err = errno;
			break;
		}
		if (pid == 0) {
			pause();
			_exit(0);
		}
		pids[n++] = pid;
	}
	printf("forked=%ld errno=%s\n", n, err == EAGAIN ? "EAGAIN" : err ? strerror(err) : "none");
	fflush(stdout);
	for (i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	return 0;
}

static int spin(long seconds)
{
	struct timespec start, now;
	volatile unsigned long x = 0;

	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int i = 0; i < 1000000; i++)
			x += (unsigned long)i;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) < seconds * 1000000000L);
	return 0;
}

int main(int argc, char **argv)
{
	long value;

	if (argc != 3) {
		fprintf(stderr, "usage: %s mem MIB | fork COUNT | spin SECONDS\n", argv[0]);
		return 64;
	}
	value = strtol(argv[2], NULL, 10);
	if (!strcmp(argv[1], "mem"))
		return mem(value);
	if (!strcmp(argv[1], "fork"))
		return fork_many(value);
	if (!strcmp(argv[1], "spin"))
		return spin(value);
	fprintf(stderr, "unknown mode %s\n", argv[1]);
	return 64;
}
