/*
 * berth-shim: what a container's monitor becomes once the container has settled.
 *
 * A Python process per container costs over a megabyte of memory that cannot be shared
 * (reference counting writes to every object it touches), where conmon costs ~370 KiB.
 * So berth's Python monitor starts the container, and if it is still running a moment
 * later, execs this program in place: same process, so the container stays its child
 * (the child-subreaper flag survives execve), and the pipes, pty, attach socket and
 * attached clients carry over as open file descriptors. This program only does what
 * an idle container needs:
 *
 *   - read the container's output and append it to the json-file log (Docker's format
 *     and rotation), copying it to attached clients;
 *   - accept attach clients on the monitor socket, pass their input to the container,
 *     and the terminal size to its pty;
 *   - run the health check command at its interval (a Python helper does the check);
 *   - when the container's PID 1 exits, exec the Python monitor again, which records
 *     the exit, applies the restart policy and tells the clients.
 *
 * The messages are berth.ipc frames: a 4-byte little-endian length, then JSON. Only
 * the few fields this program needs are read from them.
 *
 * Build: cc -O2 -o berth-shim shim.c     (install.sh does it)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 64
#define MAX_LINE (16 * 1024)
#define CHUNK 32768
#define MAX_ARGS 64

struct client {
    int sock, in, out, err, stdin_once;
};

static struct client clients[MAX_CLIENTS];
static int nclients;

static const char *cid = "";
static pid_t pid = -1;
static int out_fd = -1, err_fd = -1, console_fd = -1, in_fd = -1, listen_fd = -1;
static int tty;
static const char *log_path;
static long long log_max_size = -1;
static int log_max_file = 1;
static int log_fd = -1;
static long long log_size;
static char partial[2][MAX_LINE];
static size_t partial_len[2];
static long health_interval_ms;
static char *health_argv[MAX_ARGS];
static pid_t health_pid = -1;
static char *finish_argv[MAX_ARGS];

static void die(const char *what)
{
    fprintf(stderr, "berth-shim %.12s: %s: %s\n", cid, what, strerror(errno));
    exit(1);
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- json-file log ---------------------------------------------------------------- */

static void log_open(int truncate)
{
    int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0);
    struct stat st;

    log_fd = open(log_path, flags, 0640);
    if (log_fd < 0)
        die("open log");
    log_size = fstat(log_fd, &st) == 0 ? st.st_size : 0;
}

static void log_rotate(void)
{
    char older[4096], newer[4096];

    close(log_fd);
    if (log_max_file > 1) {
        for (int i = log_max_file - 1; i > 0; i--) {
            snprintf(older, sizeof older, "%s.%d", log_path, i);
            if (i == log_max_file - 1) {
                unlink(older);
            } else {
                snprintf(newer, sizeof newer, "%s.%d", log_path, i + 1);
                rename(older, newer);
            }
        }
        snprintf(older, sizeof older, "%s.1", log_path);
        rename(log_path, older);
        log_open(0);
    } else {
        log_open(1);
    }
}

/* Length of the valid UTF-8 sequence at s (0 if invalid). */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    size_t need;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0 && s[0] >= 0xc2)
        need = 2;
    else if ((s[0] & 0xf0) == 0xe0)
        need = 3;
    else if ((s[0] & 0xf8) == 0xf0 && s[0] <= 0xf4)
        need = 4;
    else
        return 0;
    if (need > left)
        return 0;
    for (size_t i = 1; i < need; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return need;
}

static void log_entry(const char *stream, const char *line, size_t len)
{
    static char buf[MAX_LINE * 6 + 256];
    struct timespec ts;
    struct tm tm;
    size_t n = 0;

    n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"log\":\"");
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)line[i];
        size_t k;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
            i++;
        } else if (c == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
            i++;
        } else if (c == '\r') {
            buf[n++] = '\\';
            buf[n++] = 'r';
            i++;
        } else if (c == '\t') {
            buf[n++] = '\\';
            buf[n++] = 't';
            i++;
        } else if (c < 0x20) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, "\\u%04x", c);
            i++;
        } else if ((k = utf8_len((const unsigned char *)line + i, len - i)) > 0) {
            memcpy(buf + n, line + i, k);
            n += k;
            i += k;
        } else {
            memcpy(buf + n, "\xef\xbf\xbd", 3); /* U+FFFD, as Python's errors="replace" */
            n += 3;
            i++;
        }
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\",\"stream\":\"%s\",\"time\":\"", stream);
    n += strftime(buf + n, sizeof buf - n, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, sizeof buf - n, ".%09ldZ\"}\n", ts.tv_nsec);
    if (log_max_size > 0 && log_size > 0 && log_size + (long long)n > log_max_size)
        log_rotate();
    if (write_all(log_fd, buf, n) == 0)
        log_size += (long long)n;
}

static void log_data(int stream, const char *data, size_t len)
{
    const char *name = stream ? "stderr" : "stdout";
    char *part = partial[stream];
    size_t *plen = &partial_len[stream];

    for (size_t i = 0; i < len; i++) {
        part[(*plen)++] = data[i];
        if (data[i] == '\n' || *plen == MAX_LINE) {
            log_entry(name, part, *plen);
            *plen = 0;
        }
    }
}

static void log_flush(void)
{
    for (int s = 0; s < 2; s++)
        if (partial_len[s]) {
            log_entry(s ? "stderr" : "stdout", partial[s], partial_len[s]);
            partial_len[s] = 0;
        }
}

/* ---- frames ------------------------------------------------------------------------ */

static int send_frame(int sock, const char *json)
{
    uint32_t len = (uint32_t)strlen(json);
    char head[4] = {(char)(len & 0xff), (char)((len >> 8) & 0xff), (char)((len >> 16) & 0xff),
                    (char)((len >> 24) & 0xff)};
    if (write_all(sock, head, 4) < 0)
        return -1;
    return write_all(sock, json, len);
}

static ssize_t read_full(int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* One frame into buf (NUL-terminated) with up to 8 fds; -1 at end of stream. */
static int recv_frame(int sock, char *buf, size_t size, int *fds, int *nfds)
{
    char head[4];
    char control[CMSG_SPACE(8 * sizeof(int))];
    struct iovec iov = {head, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    ssize_t n;
    uint32_t len;

    *nfds = 0;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(fds, CMSG_DATA(c), (size_t)count * sizeof(int));
            *nfds = count;
        }
    if (read_full(sock, head + 1, 3) < 0)
        return -1;
    len = (uint32_t)(unsigned char)head[0] | (uint32_t)(unsigned char)head[1] << 8 |
          (uint32_t)(unsigned char)head[2] << 16 | (uint32_t)(unsigned char)head[3] << 24;
    if (len >= size)
        return -1;
    if (read_full(sock, buf, len) < 0)
        return -1;
    buf[len] = 0;
    return 0;
}

/* "key":true in a frame we wrote ourselves (berth.ipc: compact JSON, no spaces). */
static int json_true(const char *json, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":true", key);
    return strstr(json, pattern) != NULL;
}

static long json_number(const char *json, const char *key, long fallback)
{
    char pattern[64];
    const char *at;
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    at = strstr(json, pattern);
    return at ? strtol(at + strlen(pattern), NULL, 10) : fallback;
}

/* ---- clients ----------------------------------------------------------------------- */

static void drop(int i)
{
    int fds[4] = {clients[i].sock, clients[i].in, clients[i].out, clients[i].err};
    for (int k = 0; k < 4; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    clients[i] = clients[--nclients];
}

static void resize(int rows, int cols)
{
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    if (console_fd >= 0 && rows > 0 && cols > 0)
        ioctl(console_fd, TIOCSWINSZ, &ws);
}

static void accept_client(void)
{
    char buf[4096], reply[128];
    int fds[8], nfds, k = 0;
    struct ucred cred;
    socklen_t len = sizeof cred;
    int sock = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    struct client c = {sock, -1, -1, -1, 0};

    if (sock < 0)
        return;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0 ||
        recv_frame(sock, buf, sizeof buf, fds, &nfds) < 0 || !strstr(buf, "\"op\":\"attach\"") ||
        nclients == MAX_CLIENTS) {
        for (int i = 0; nfds > 0 && i < nfds; i++)
            close(fds[i]);
        close(sock);
        return;
    }
    if (json_true(buf, "stdin") && k < nfds)
        c.in = fds[k++];
    if (json_true(buf, "stdout") && k < nfds)
        c.out = fds[k++];
    if (json_true(buf, "stderr") && k < nfds)
        c.err = fds[k++];
    while (k < nfds)
        close(fds[k++]);
    c.stdin_once = json_true(buf, "stdin_once");
    if (strstr(buf, "\"console_size\":[")) {
        const char *at = strstr(buf, "\"console_size\":[") + 16;
        char *end;
        long rows = strtol(at, &end, 10);
        if (*end == ',')
            resize((int)rows, (int)strtol(end + 1, NULL, 10));
    }
    snprintf(reply, sizeof reply, "{\"event\":\"started\",\"id\":\"%s\",\"pid\":%d}", cid, pid);
    send_frame(sock, reply);
    clients[nclients++] = c;
}

static void client_control(int i)
{
    char buf[4096];
    int fds[8], nfds;

    if (recv_frame(clients[i].sock, buf, sizeof buf, fds, &nfds) < 0) {
        drop(i);
        return;
    }
    for (int k = 0; k < nfds; k++)
        close(fds[k]);
    if (strstr(buf, "\"op\":\"resize\""))
        resize((int)json_number(buf, "rows", 0), (int)json_number(buf, "cols", 0));
}

static void client_input(int i)
{
    char buf[CHUNK];
    ssize_t n = read(clients[i].in, buf, sizeof buf);
    int sink = tty ? console_fd : in_fd;

    if (n <= 0) {
        close(clients[i].in);
        clients[i].in = -1;
        if (clients[i].stdin_once && !tty && in_fd >= 0) {
            close(in_fd);
            in_fd = -1;
        }
        return;
    }
    if (sink >= 0)
        write_all(sink, buf, (size_t)n);
}

static void pump(int *fd, int stream)
{
    char buf[CHUNK];
    ssize_t n = read(*fd, buf, sizeof buf);

    if (n <= 0) { /* EOF, or EIO from a pty whose last slave closed */
        close(*fd);
        *fd = -1;
        return;
    }
    log_data(stream, buf, (size_t)n);
    for (int i = 0; i < nclients; i++) {
        int target = stream && clients[i].err >= 0 ? clients[i].err : clients[i].out;
        if (target >= 0 && write_all(target, buf, (size_t)n) < 0)
            drop(i--);
    }
}

/* ---- health checks ----------------------------------------------------------------- */

static void run_health_check(void)
{
    if (health_pid > 0)
        return; /* the last one is still running: never two at once */
    health_pid = fork();
    if (health_pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(health_argv[0], health_argv);
        _exit(127);
    }
}

/* ---- the end: back to Python --------------------------------------------------------- */

static void keep_open(int fd)
{
    if (fd >= 0)
        fcntl(fd, F_SETFD, 0);
}

static void finish(int status)
{
    char arg_status[32], clist[MAX_CLIENTS * 48 + 1] = "";
    char *argv[MAX_ARGS + 8];
    int n = 0;

    log_flush();
    if (log_fd >= 0)
        close(log_fd);
    for (int i = 0; i < nclients; i++) {
        char one[48];
        snprintf(one, sizeof one, "%s%d:%d:%d:%d:%d", i ? "," : "", clients[i].sock,
                 clients[i].in, clients[i].out, clients[i].err, clients[i].stdin_once);
        strcat(clist, one);
        keep_open(clients[i].sock);
        keep_open(clients[i].in);
        keep_open(clients[i].out);
        keep_open(clients[i].err);
    }
    keep_open(listen_fd);
    snprintf(arg_status, sizeof arg_status, "%d", status);
    for (int i = 0; finish_argv[i]; i++)
        argv[n++] = finish_argv[i];
    argv[n++] = "--status";
    argv[n++] = arg_status;
    argv[n++] = "--clients";
    argv[n++] = clist;
    argv[n] = NULL;
    execv(argv[0], argv);
    die("exec the python monitor");
}

/* ---- main -------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: berth-shim --id ID --pid PID --log PATH [--log-max-size N] "
                    "[--log-max-file N] (--out FD --err FD | --console FD) [--in FD] "
                    "[--listen FD] [--client SOCK:IN:OUT:ERR:ONCE]... "
                    "[--health-interval-ms N --health ARGV... --] --finish ARGV...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    sigset_t mask;
    int sfd, status = 0, exited = 0;
    struct timespec next_health = {0, 0};

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--finish")) {
            int n = 0;
            for (i++; i < argc && n < MAX_ARGS - 1; i++)
                finish_argv[n++] = argv[i];
            break;
        } else if (!strcmp(a, "--health")) {
            int n = 0;
            for (i++; i < argc && strcmp(argv[i], "--") && n < MAX_ARGS - 1; i++)
                health_argv[n++] = argv[i];
        } else if (!v) {
            usage();
        } else if (!strcmp(a, "--id")) {
            cid = argv[++i];
        } else if (!strcmp(a, "--pid")) {
            pid = (pid_t)atoi(argv[++i]);
        } else if (!strcmp(a, "--log")) {
            log_path = argv[++i];
        } else if (!strcmp(a, "--log-max-size")) {
            log_max_size = atoll(argv[++i]);
        } else if (!strcmp(a, "--log-max-file")) {
            log_max_file = atoi(argv[++i]);
        } else if (!strcmp(a, "--out")) {
            out_fd = atoi(argv[++i]);
        } else if (!strcmp(a, "--err")) {
            err_fd = atoi(argv[++i]);
        } else if (!strcmp(a, "--console")) {
            console_fd = atoi(argv[++i]);
            tty = 1;
        } else if (!strcmp(a, "--in")) {
            in_fd = atoi(argv[++i]);
        } else if (!strcmp(a, "--listen")) {
            listen_fd = atoi(argv[++i]);
        } else if (!strcmp(a, "--health-interval-ms")) {
            health_interval_ms = atol(argv[++i]);
        } else if (!strcmp(a, "--client")) {
            struct client c;
            if (nclients < MAX_CLIENTS &&
                sscanf(argv[++i], "%d:%d:%d:%d:%d", &c.sock, &c.in, &c.out, &c.err,
                       &c.stdin_once) == 5)
                clients[nclients++] = c;
        } else {
            usage();
        }
    }
    if (pid <= 0 || !log_path || !finish_argv[0])
        usage();
    log_open(0);

    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die("signalfd");
    signal(SIGPIPE, SIG_IGN);
    if (health_interval_ms > 0 && health_argv[0]) {
        clock_gettime(CLOCK_MONOTONIC, &next_health);
        next_health.tv_sec += health_interval_ms / 1000;
        next_health.tv_nsec += (health_interval_ms % 1000) * 1000000L;
    }

    for (;;) {
        struct pollfd pfd[4 + 2 * MAX_CLIENTS];
        int kind[4 + 2 * MAX_CLIENTS], who[4 + 2 * MAX_CLIENTS], n = 0, timeout = -1;

        /* reap: the container, a health check, or anything re-parented to us */
        for (;;) {
            int st;
            pid_t p = waitpid(-1, &st, WNOHANG);
            if (p <= 0)
                break;
            if (p == pid) {
                exited = 1;
                status = st;
            } else if (p == health_pid) {
                health_pid = -1;
            }
        }
        if (exited && out_fd < 0 && err_fd < 0 && console_fd < 0)
            finish(status);
        if (exited && console_fd >= 0 && out_fd < 0 && err_fd < 0) {
            /* the pty may hold unread output: drain what is there without blocking */
            fcntl(console_fd, F_SETFL, O_NONBLOCK);
        }

        pfd[n] = (struct pollfd){sfd, POLLIN, 0}; kind[n++] = 's';
        if (out_fd >= 0) { pfd[n] = (struct pollfd){out_fd, POLLIN, 0}; kind[n++] = 'o'; }
        if (err_fd >= 0) { pfd[n] = (struct pollfd){err_fd, POLLIN, 0}; kind[n++] = 'e'; }
        if (console_fd >= 0) { pfd[n] = (struct pollfd){console_fd, POLLIN, 0}; kind[n++] = 'c'; }
        if (listen_fd >= 0) { pfd[n] = (struct pollfd){listen_fd, POLLIN, 0}; kind[n++] = 'l'; }
        for (int i = 0; i < nclients; i++) {
            pfd[n] = (struct pollfd){clients[i].sock, POLLIN, 0}; kind[n] = 'k'; who[n++] = i;
            if (clients[i].in >= 0) {
                pfd[n] = (struct pollfd){clients[i].in, POLLIN, 0}; kind[n] = 'i'; who[n++] = i;
            }
        }
        if (exited)
            timeout = 50; /* output left in a pty after PID 1 is gone: give it a moment */
        else if (next_health.tv_sec) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (next_health.tv_sec - now.tv_sec) * 1000 +
                      (next_health.tv_nsec - now.tv_nsec) / 1000000;
            timeout = ms < 0 ? 0 : (int)ms;
        }
        int ready = poll(pfd, (nfds_t)n, timeout);
        if (ready < 0 && errno != EINTR)
            die("poll");
        if (ready == 0 && exited) {
            if (console_fd >= 0) {
                close(console_fd);
                console_fd = -1;
            }
            continue;
        }
        if (next_health.tv_sec && !exited) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > next_health.tv_sec ||
                (now.tv_sec == next_health.tv_sec && now.tv_nsec >= next_health.tv_nsec)) {
                run_health_check();
                next_health = now;
                next_health.tv_sec += health_interval_ms / 1000;
                next_health.tv_nsec += (health_interval_ms % 1000) * 1000000L;
                if (next_health.tv_nsec >= 1000000000L) {
                    next_health.tv_sec++;
                    next_health.tv_nsec -= 1000000000L;
                }
            }
        }
        /* clients are handled from the highest index down: drop() moves the last one */
        for (int k = n - 1; k >= 0; k--) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            switch (kind[k]) {
            case 's': {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == sizeof si)
                    ;
                break;
            }
            case 'o': pump(&out_fd, 0); break;
            case 'e': pump(&err_fd, 1); break;
            case 'c': pump(&console_fd, 0); break;
            case 'l': accept_client(); break;
            case 'k': if (who[k] < nclients) client_control(who[k]); break;
            case 'i': if (who[k] < nclients && clients[who[k]].in >= 0) client_input(who[k]); break;
            }
        }
    }
}
