// The resource tracker: a small process that outlives crashes. Every process of a program tree
// tells it, over one shared socket, the names of the shared-memory segments it creates ("R name")
// and removes ("U name"). When the last process holding its end is gone, the tracker
// unlinks whatever is still registered and exits (Python's resource_tracker, same idea).
//
// It also ends the tree: every process multiproc starts is reported to it ("P pid", and "X pid"
// once reaped); when the process that started the tracker (the program's main process) ends, by
// exit, exception or signal, the tracker SIGKILLs every reported process still running, then
// cleans up as above. It runs in its own process group, so a kill of the program's group
// (kill -9 -PGID) leaves it to do that.
//
// The tracker is forked on first use and runs nothing but system calls, so it is safe to start
// from a multi-threaded program. Spawned children inherit the socket at a fixed descriptor.
#pragma once

#include <sys/types.h>
#include <string>

namespace multiproc::detail {

void tracker_register(const std::string& segment_name);
void tracker_unregister(const std::string& segment_name);

// A process this process started (it is ended with the tree) / has reaped.
void tracker_watch_process(pid_t pid);
void tracker_forget_process(pid_t pid);

// This process's end of the tracker's socket in this process, starting the tracker if needed.
int tracker_fd();
// For spawned children: adopt the socket inherited from the parent.
void tracker_adopt(int fd);

}  // namespace multiproc::detail
