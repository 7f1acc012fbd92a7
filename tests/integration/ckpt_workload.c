/*
 * A stateful workload for the checkpoint/restore tests (tests/integration/test_checkpoint.py).
 *
 * Built statically on the host and copied into a container. Everything it
 * checks lives in kernel objects CRIU must carry across a dump and restore:
 *   - a counter kept only in memory;
 *   - a child forked and reaped about once a second (forks=);
 *   - a POSIX timer, an interval timer (setitimer) and a timerfd, each counting ticks;
 *   - a pipe pair and a unix socket pair to a child process that echoes tokens back;
 *   - SysV IPC: a shared memory segment holding a marker, a semaphore, a queued message;
 *   - a listening TCP socket and an echo service for every connection (lines echoed back,
 *     prefixed with "echo:"), so a connection from outside can prove it is the same one.
 * Every 50 ms it writes its status as one line to STATUS (on the container's disk).
 *
 *   ckpt_workload PORT STATUS
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 8
#define SHM_MARK "ovz-shm-ok"

static volatile sig_atomic_t posix_ticks, itimer_ticks;

static void on_posix(int sig) { (void)sig; posix_ticks++; }
static void on_alarm(int sig) { (void)sig; itimer_ticks++; }

struct qmsg { long mtype; char text[32]; };

static void echo_child(int pipe_in, int pipe_out, int unix_sk)
{
	char buf[64];
	struct pollfd fds[2] = {{pipe_in, POLLIN, 0}, {unix_sk, POLLIN, 0}};

	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		if (fds[0].revents & POLLIN) {
			ssize_t n = read(pipe_in, buf, sizeof(buf));
			if (n <= 0)
				_exit(0);
			if (write(pipe_out, buf, n) != n)
				_exit(1);
		}
		if (fds[1].revents & POLLIN) {
			ssize_t n = read(unix_sk, buf, sizeof(buf));
			if (n <= 0)
				_exit(0);
			if (write(unix_sk, buf, n) != n)
				_exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	int to_child[2], from_child[2], sk[2], listener, one = 1, timer_fd, shm_id, sem_id, msg_id;
	int clients[MAX_CLIENTS], nclients = 0, i;
	unsigned long counter = 0, timerfd_ticks = 0, pipe_trips = 0, unix_trips = 0, accepted = 0, forks = 0;
	struct sockaddr_in addr;
	struct sigevent sev;
	struct itimerspec its;
	struct itimerval itv;
	timer_t timer;
	char *shm, tmp[256], line[512];

	if (argc != 3) {
		fprintf(stderr, "usage: %s PORT STATUS\n", argv[0]);
		return 2;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);

	if (pipe(to_child) || pipe(from_child) || socketpair(AF_UNIX, SOCK_STREAM, 0, sk))
		return 1;
	if (fork() == 0) {
		close(to_child[1]);
		close(from_child[0]);
		close(sk[0]);
		echo_child(to_child[0], from_child[1], sk[1]);
	}
	close(to_child[0]);
	close(from_child[1]);
	close(sk[1]);

	signal(SIGRTMIN, on_posix);
	signal(SIGALRM, on_alarm);
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN;
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer))
		return 1;
	its.it_interval.tv_sec = 0;
	its.it_interval.tv_nsec = 50 * 1000 * 1000;
	its.it_value = its.it_interval;
	if (timer_settime(timer, 0, &its, NULL))
		return 1;
	itv.it_interval.tv_sec = 0;
	itv.it_interval.tv_usec = 100 * 1000;
	itv.it_value = itv.it_interval;
	if (setitimer(ITIMER_REAL, &itv, NULL))
		return 1;
	timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	its.it_interval.tv_nsec = 100 * 1000 * 1000;
	its.it_value = its.it_interval;
	if (timer_fd < 0 || timerfd_settime(timer_fd, 0, &its, NULL))
		return 1;

	shm_id = shmget(0x0213, 4096, IPC_CREAT | 0600);
	sem_id = semget(0x0213, 1, IPC_CREAT | 0600);
	msg_id = msgget(0x0213, IPC_CREAT | 0600);
	if (shm_id < 0 || sem_id < 0 || msg_id < 0)
		return 1;
	shm = shmat(shm_id, NULL, 0);
	if (shm == (void *)-1)
		return 1;
	strcpy(shm, SHM_MARK);
	if (semctl(sem_id, 0, SETVAL, 7) < 0)
		return 1;
	{
		struct qmsg m = {1, "ovz-msg-ok"};
		if (msgsnd(msg_id, &m, sizeof(m.text), 0))
			return 1;
	}

	listener = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(atoi(argv[1]));
	if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) || listen(listener, 8))
		return 1;

	for (;;) {
		struct pollfd fds[2 + MAX_CLIENTS];
		char buf[256], echo[300];
		uint64_t expirations;
		struct msqid_ds qstat;
		int n = 0;

		fds[n].fd = listener; fds[n++].events = POLLIN;
		fds[n].fd = timer_fd; fds[n++].events = POLLIN;
		for (i = 0; i < nclients; i++) {
			fds[n].fd = clients[i]; fds[n++].events = POLLIN;
		}
		if (poll(fds, n, 50) < 0 && errno != EINTR)
			return 1;
		counter++;
		if (fds[0].revents & POLLIN) {
			int c = accept(listener, NULL, NULL);
			if (c >= 0 && nclients < MAX_CLIENTS) {
				clients[nclients++] = c;
				accepted++;
			} else if (c >= 0) {
				close(c);
			}
		}
		if ((fds[1].revents & POLLIN) && read(timer_fd, &expirations, sizeof(expirations)) == sizeof(expirations))
			timerfd_ticks += expirations;
		for (i = 0; i < nclients; i++) {
			ssize_t got;
			if (!(fds[2 + i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			got = read(clients[i], buf, sizeof(buf) - 1);
			if (got <= 0) {
				close(clients[i]);
				clients[i] = clients[--nclients];
				fds[2 + i] = fds[2 + nclients];
				i--;
				continue;
			}
			buf[got] = 0;
			snprintf(echo, sizeof(echo), "echo:%s", buf);
			if (write(clients[i], echo, strlen(echo)) < 0)
				continue;
		}
		/* round trips through the child: pipe and unix socket */
		if (write(to_child[1], "p", 1) == 1 && read(from_child[0], buf, 1) == 1 && buf[0] == 'p')
			pipe_trips++;
		if (write(sk[0], "u", 1) == 1 && read(sk[0], buf, 1) == 1 && buf[0] == 'u')
			unix_trips++;
		/* about once a second, a child that exits at once, reaped: the process can still fork */
		if (counter % 20 == 0) {
			pid_t child = fork();
			if (child == 0)
				_exit(0);
			if (child > 0 && waitpid(child, NULL, 0) == child)
				forks++;
		}
		if (msgctl(msg_id, IPC_STAT, &qstat))
			qstat.msg_qnum = 0;
		snprintf(line, sizeof(line),
			 "counter=%lu posix=%d itimer=%d timerfd=%lu pipe=%lu unix=%lu shm=%s sem=%d msgq=%lu "
			 "accepted=%lu clients=%d pid=%d forks=%lu\n",
			 counter, (int)posix_ticks, (int)itimer_ticks, timerfd_ticks, pipe_trips, unix_trips,
			 strcmp(shm, SHM_MARK) == 0 ? "ok" : "bad", semctl(sem_id, 0, GETVAL),
			 (unsigned long)qstat.msg_qnum, accepted, nclients, getpid(), forks);
		{
			FILE *f = fopen(tmp, "w");
			if (f) {
				fputs(line, f);
				fclose(f);
				rename(tmp, argv[2]);
			}
		}
	}
}
