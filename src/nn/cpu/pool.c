/* Worker threads for the CPU backend (see pool.h). Workers sleep on a
 * condition variable between loops; a loop is published as a generation
 * number, tasks are claimed with an atomic counter, and the last thread to
 * finish wakes the caller. A loop costs a few microseconds of wake-up, which
 * is small beside the ops it runs (the model runs about two thousand). */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct nn_pool {
    int threads;
    pthread_t *ids; /* (threads - 1) workers */
    int started;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    unsigned long generation; /* bumped per loop, under lock */
    int quit;
    /* The current loop. */
    nn_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;    /* next unclaimed task */
    int busy;           /* workers still inside this loop, under lock */
};

typedef struct {
    nn_pool *pool;
    int thread;
    void (*init)(void);
} worker_arg;

static void run_tasks(nn_pool *p, int thread)
{
    for (;;) {
        int task = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (task >= p->n_tasks) break;
        p->fn(p->ctx, task, thread);
    }
}

static void *worker(void *arg)
{
    worker_arg *w = arg;
    nn_pool *p = w->pool;
    int thread = w->thread;
    if (w->init) w->init();
    free(w);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->wake, &p->lock);
        if (p->quit) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        run_tasks(p, thread);
        pthread_mutex_lock(&p->lock);
        if (--p->busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

nn_pool *pool_new(int threads, void (*thread_init)(void))
{
    if (threads < 1) threads = 1;
    nn_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->threads = threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    if (threads > 1) {
        p->ids = calloc((size_t)threads - 1, sizeof *p->ids);
        if (!p->ids) goto fail;
        for (int t = 1; t < threads; t++) {
            worker_arg *w = malloc(sizeof *w);
            if (!w) goto fail;
            w->pool = p;
            w->thread = t;
            w->init = thread_init;
            if (pthread_create(&p->ids[t - 1], NULL, worker, w) != 0) {
                free(w);
                goto fail;
            }
            p->started++;
        }
    }
    return p;
fail:
    pool_free(p);
    return NULL;
}

void pool_free(nn_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->quit = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int t = 0; t < p->started; t++) pthread_join(p->ids[t], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->ids);
    free(p);
}

int pool_threads(const nn_pool *p) { return p->threads; }

void pool_run(nn_pool *p, nn_task_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0) return;
    if (p->threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->busy = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    run_tasks(p, 0);
    pthread_mutex_lock(&p->lock);
    while (p->busy > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
