/* `drum2midi serve`: the web interface. The command line hands over when
 * its first argument is "serve". */
#ifndef D2M_WEB_H
#define D2M_WEB_H

/* argv[0] is "serve"; the rest are serve's options (see --help). Runs until
 * SIGINT or SIGTERM. Returns the exit status: 0 after a clean stop, 1 when
 * the server cannot start, 2 for a bad command line. */
int web_serve_main(int argc, char **argv);

/* `drum2midi __runner`: the server's job runner process (see runner.h). */
int web_runner_main(int argc, char **argv);

#endif
