/* A fixed set of worker threads that run one parallel loop at a time.
 *
 * pool_run(pool, fn, ctx, n_tasks) calls fn(ctx, task, thread) once for each
 * task in [0, n_tasks) and returns when all are done. Threads take tasks in
 * order through an atomic counter; a task must write only its own outputs,
 * so results do not depend on which thread ran it. thread (in [0, threads))
 * names per-thread scratch. The calling thread is thread 0.
 *
 * Threading: pool_run is called by one thread at a time (the backend's
 * owner). Not reentrant: a task must not call pool_run.
 */
#ifndef D2M_NN_POOL_H
#define D2M_NN_POOL_H

typedef struct nn_pool nn_pool;
typedef void (*nn_task_fn)(void *ctx, int task, int thread);

/* threads >= 1 in all; each worker calls thread_init (may be NULL) once
 * when it starts. NULL when out of memory or threads cannot start. */
nn_pool *pool_new(int threads, void (*thread_init)(void));
void pool_free(nn_pool *p);
int pool_threads(const nn_pool *p);
void pool_run(nn_pool *p, nn_task_fn fn, void *ctx, int n_tasks);

#endif
