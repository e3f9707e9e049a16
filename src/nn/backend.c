/* What every backend shares: freeing through the table. */
#include "backend.h"

void nn_backend_free(nn_backend *be)
{
    if (be) be->free(be);
}
