// The fork server's own loop (the server side; the client side is popen_forkserver.cpp).
#pragma once

namespace multiproc::detail {
// Runs in a process freshly executed for the purpose, single-threaded. Serves fork requests on
// `listen_fd` until `alive_fd` reports end-of-file (the process that started it is gone).
[[noreturn]] void forkserver_main(int listen_fd, int alive_fd);
}  // namespace multiproc::detail
