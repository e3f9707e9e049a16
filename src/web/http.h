/* The HTTP side of `drum2midi serve`: libmicrohttpd, one thread per
 * connection, routing the JSON API, event streams, job files and the
 * embedded page. No pipeline work happens here (see jobs.h). */
#ifndef D2M_WEB_HTTP_H
#define D2M_WEB_HTTP_H

#include "web/jobs.h"

typedef struct web_server web_server;

typedef struct {
    char host[64];          /* an IPv4 or IPv6 address, or "localhost" */
    int port;               /* 0 = any free port */
    long long max_upload_bytes;
    int max_connections;
} web_server_config;

/* Starts listening; *port_out (may be NULL) gets the bound port. Returns 0
 * or D2M_ERR_INVALID (a bad host) / D2M_ERR_IO (cannot listen), err set. */
int web_server_start(web_server **out, const web_server_config *cfg, job_store *jobs,
                     int *port_out, d2m_error *err);

/* Closes the listening socket and every connection. NULL-safe. */
void web_server_stop(web_server *w);

#endif
