/*
 * A memory workload for bench/migration.py: allocate SIZE MiB, touch every page,
 * then keep dirtying RATE MiB per second (one byte per 4 KiB page, round robin),
 * as a busy service would. Built statically and copied into a busybox container.
 *
 *   dirty SIZE_MIB RATE_MIB_PER_S
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
	size_t size, rate, page = 4096, pos = 0, i, per_tick;
	unsigned char *mem;
	struct timespec tick = {0, 10 * 1000 * 1000};	/* 10 ms */

	if (argc != 3)
		return 2;
	size = (size_t)atol(argv[1]) << 20;
	rate = (size_t)atol(argv[2]) << 20;
	mem = malloc(size);
	if (!mem)
		return 1;
	memset(mem, 1, size);
	per_tick = rate / 100 / page;
	for (;;) {
		for (i = 0; i < per_tick; i++) {
			mem[pos]++;
			pos = (pos + page) % size;
		}
		nanosleep(&tick, NULL);
	}
}
