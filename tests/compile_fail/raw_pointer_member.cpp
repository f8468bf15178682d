// Must not compile: a trivially copyable struct with a raw pointer member used to cross as bytes
// without a word (and a spawned child then followed the pointer into nothing). It must be refused,
// naming the struct, whether sent as a queue item or as a task argument.
// variants: queue task
// expect-first-error: this struct has a raw pointer or view member.*hold the data by value
// expect-error: this_type_cannot_cross_a_process_boundary<Msg>
#include <multiproc/process.hpp>
#include <multiproc/queues.hpp>

struct Msg {
  int id;
  char* text;
};

void show(Msg) {}

void send(Msg m) {
#if defined(VARIANT_queue)
  multiproc::Queue<Msg> q;
  q.put(m);
#elif defined(VARIANT_task)
  multiproc::Process p(show, m);
#endif
}
