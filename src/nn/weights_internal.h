/* For the weight loaders only: building a d2m_weights. */
#ifndef D2M_WEIGHTS_INTERNAL_H
#define D2M_WEIGHTS_INTERNAL_H

#include "weights.h"

struct d2m_weights {
    d2m_tensor *tensors; /* (n) */
    char **names;        /* (n) owned copies, tensors[i].name points here */
    float **buffers;     /* (n) owned data, tensors[i].data points here */
    int n, cap;
    d2m_model_args args;
};

d2m_weights *weights_new(void);
/* Add a tensor: copies the name, takes ownership of data (malloc'ed, numel
 * floats). Duplicate names are an error (D2M_ERR_FORMAT); on any error data
 * is freed. */
int weights_add(d2m_weights *w, const char *name, int ndim, const int64_t *shape, float *data,
                d2m_error *err);

/* IEEE 754 half to float, exact for every value (subnormals, inf, nan). */
float weights_half_to_float(uint16_t h);

#endif
