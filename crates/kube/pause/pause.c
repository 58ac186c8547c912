/* The pod sandbox's pause process of the locally built pause image (crates/kube, image::compile_pause):
 * holds the pod's namespaces, reaps orphaned children, exits 0 on SIGTERM/SIGINT.
 * Built with `cc -O2 -static` so the image needs nothing but this one file. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_chld(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction term = {0}, chld = {0};
    term.sa_handler = on_term;
    chld.sa_handler = on_chld;
    chld.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGTERM, &term, 0) < 0 || sigaction(SIGINT, &term, 0) < 0 || sigaction(SIGCHLD, &chld, 0) < 0)
        return 1;
    for (;;) pause();
}
