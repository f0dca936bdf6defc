/* Makes llama-bench take turns with another process, one repetition each
 * (benchmarks/turns.py, `python -m benchmarks.reference`). Loaded with LD_PRELOAD.
 *
 * llama-bench clears the KV cache once after creating its context and again before every
 * repetition, before its clock starts. That call is the gate: there this process hands
 * the turn to the other side and waits until it comes back. So no repetition of either
 * tool ever overlaps one of the other, and each follows one of the other's: both meet
 * the same machine.
 *
 * The turn travels through two FIFOs named by EDGEBENCH_TURN_IN and EDGEBENCH_TURN_OUT,
 * one byte at a time: 't' (your turn) or 'x' (I have finished: run on alone). llama-bench
 * starts holding the turn, unless EDGEBENCH_TURN_WAIT_FIRST is set (two llama-bench
 * processes taking turns: the null check of the method in RESULTS.md). Without the two
 * FIFO variables the shim does nothing.
 *
 * With EDGEBENCH_TURN_SYNC_LOG set, it also notes when each llama_synchronize returns
 * (llama-bench calls it after a prompt and after each generated token) and writes one
 * line per segment between gates to that file: how llama-bench's own decode right after
 * a prompt runs inside its pg test, which it does not report. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_SYNCS 65536
static int64_t syncs[MAX_SYNCS];
static int n_syncs = 0;

/* One line of synchronize times (ns) per segment; called at each gate and at exit. */
static void flush_syncs(void) {
    const char *path = getenv("EDGEBENCH_TURN_SYNC_LOG");
    if (!path) {
        return;
    }
    FILE *log = fopen(path, "a");
    if (!log) {
        fprintf(stderr, "turns_shim: cannot append to %s\n", path);
        exit(3);
    }
    for (int i = 0; i < n_syncs; i++) {
        fprintf(log, i ? " %lld" : "%lld", (long long)syncs[i]);
    }
    fputc('\n', log);
    fclose(log);
    n_syncs = 0;
}

static bool holding = true;
static bool alone = false;
static bool started = false;

static void send_message(char message) {
    const char *path = getenv("EDGEBENCH_TURN_OUT");
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, &message, 1) != 1) {
        fprintf(stderr, "turns_shim: cannot write to %s\n", path);
        exit(3);
    }
    close(fd);
}

static char receive_message(void) {
    const char *path = getenv("EDGEBENCH_TURN_IN");
    char message = 'x'; /* the other side closed without a word: it is gone */
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "turns_shim: cannot read from %s\n", path);
        exit(3);
    }
    if (read(fd, &message, 1) != 1) {
        message = 'x';
    }
    close(fd);
    return message;
}

static void take_turn(void) {
    flush_syncs();
    if (alone || !getenv("EDGEBENCH_TURN_IN") || !getenv("EDGEBENCH_TURN_OUT")) {
        return;
    }
    if (!started) {
        started = true;
        holding = getenv("EDGEBENCH_TURN_WAIT_FIRST") == NULL;
    }
    if (holding) {
        send_message('t');
        holding = false;
    }
    if (receive_message() == 'x') {
        alone = true;
    } else {
        holding = true;
    }
}

/* llama.h: void llama_memory_clear(llama_memory_t mem, bool data); */
void llama_memory_clear(void *mem, bool data) {
    static void (*next)(void *, bool) = NULL;
    if (!next) {
        next = (void (*)(void *, bool))dlsym(RTLD_NEXT, "llama_memory_clear");
        if (!next) {
            fprintf(stderr, "turns_shim: llama_memory_clear not found\n");
            exit(3);
        }
    }
    take_turn();
    next(mem, data);
}

/* llama.h: void llama_synchronize(struct llama_context * ctx); */
void llama_synchronize(void *ctx) {
    static void (*next)(void *) = NULL;
    if (!next) {
        next = (void (*)(void *))dlsym(RTLD_NEXT, "llama_synchronize");
        if (!next) {
            fprintf(stderr, "turns_shim: llama_synchronize not found\n");
            exit(3);
        }
    }
    next(ctx);
    if (n_syncs < MAX_SYNCS) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        syncs[n_syncs++] = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    }
}

__attribute__((destructor)) static void finish(void) {
    flush_syncs();
    if (!started && getenv("EDGEBENCH_TURN_WAIT_FIRST")) {
        return; /* never took part: the other side is not waiting for us */
    }
    if (holding && !alone && getenv("EDGEBENCH_TURN_OUT")) {
        send_message('x');
    }
}
