/* One process-wide lock for library calls that are not thread-safe, such
 * as FFTW's planner (plan creation and destruction): every module that
 * plans FFTs takes this same lock, so two engines on two threads cannot
 * collide. Never held across long work. */
#include "base.h"

#include <pthread.h>

static pthread_mutex_t library_lock = PTHREAD_MUTEX_INITIALIZER;

void d2m_library_lock(void) { pthread_mutex_lock(&library_lock); }

void d2m_library_unlock(void) { pthread_mutex_unlock(&library_lock); }
