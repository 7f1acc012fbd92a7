/*
 * A memory workload for the lazy-migration tests (tests/integration/test_migration.py).
 *
 * Fills MIB MiB with a pattern, then checks the whole of it again and again. After each
 * pass it writes one line to STATUS (on the container's disk):
 *     pass=N bad=B mib=M pid=P
 * where B counts the 8-byte words that did not hold the pattern over all passes, so a
 * page that came back wrong (or as zeros) after a migration shows as bad > 0.
 *
 *   memfill MIB STATUS
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static uint64_t pattern(size_t i) { return (i * 0x9E3779B97F4A7C15ull) ^ 0x6f767a6d656d6f72ull; }

int main(int argc, char **argv)
{
	char tmp[4096];
	size_t words, i;
	uint64_t *mem, bad = 0, pass;

	if (argc != 3) {
		fprintf(stderr, "usage: %s MIB STATUS\n", argv[0]);
		return 2;
	}
	words = (size_t)atoi(argv[1]) * (1 << 20) / sizeof(uint64_t);
	mem = malloc(words * sizeof(uint64_t));
	if (!mem)
		return 1;
	for (i = 0; i < words; i++)
		mem[i] = pattern(i);
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);
	for (pass = 1;; pass++) {
		FILE *out;

		for (i = 0; i < words; i++)
			if (mem[i] != pattern(i))
				bad++;
		out = fopen(tmp, "w");
		if (out) {
			fprintf(out, "pass=%llu bad=%llu mib=%s pid=%d\n", (unsigned long long)pass,
				(unsigned long long)bad, argv[1], (int)getpid());
			fclose(out);
			rename(tmp, argv[2]);
		}
		usleep(100000);
	}
}
