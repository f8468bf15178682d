// Fuzz target: a pool worker's side of a task message (pool_protocol.hpp, pool_jobs.hpp, task.hpp).
// The bytes are a whole message as a worker takes it from the task queue: the frame is split,
// its TaskCode decoded and resolved, and its arguments decoded and run by real invokers of a few
// signatures (the header's kind picks one: the function pointers a fuzzed TaskCode resolves to
// are never called, since a worker trusts them to name the program's own code). A worker must
// answer with a result or a ProcessError; the answer must decode on the parent's side.
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/vector.hpp>

#include <multiproc/detail/pool_jobs.hpp>
#include <multiproc/detail/pool_protocol.hpp>
#include <multiproc/detail/task.hpp>

namespace {

namespace d = multiproc::detail;

int halve(int x) {
  if (x < 0) throw std::runtime_error("negative");
  return x / 2;
}

// Runs the chunk invoker for F and decodes what it answers as the parent would.
template <class F, class ArgsTuple, bool kStar>
void run_chunk(const d::TaskFrame& frame) {
  using R = d::task_result_t<F, ArgsTuple>;
  using Elem = typename d::chunk_elem<ArgsTuple, kStar>::type;
  std::string out;
  size_t count = 0;
  try {
    const char* p = frame.args;
    count = d::decode_chunk_items<Elem>(p, frame.end).size();
    d::invoke_chunk<F, ArgsTuple, kStar>(nullptr, frame.args, frame.end, &out);
  } catch (const multiproc::ProcessError&) {
    return;
  }
  // The parent knows how many calls it sent: the answer must account for each exactly once.
  size_t calls = 0;
  d::decode_chunk<R>(
      out.data(), out.size(), count, std::nullopt, [&](size_t, auto&&) { ++calls; },
      [&](size_t, std::exception_ptr) { ++calls; });
  if (calls != count) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  d::TaskFrame frame;
  try {
    frame = d::split_task_frame(reinterpret_cast<const char*>(data), size);
  } catch (const multiproc::ProcessError&) {
    return 0;
  }
  try {
    (void)d::resolve_task(d::load<d::TaskCode>(frame.code));
  } catch (const multiproc::ProcessError&) {
  }
  switch (frame.header.kind % 4) {
    case 0: {
      auto f = [](int x) { return halve(x); };
      run_chunk<decltype(f), std::tuple<int>, false>(frame);
      break;
    }
    case 1: {
      auto f = [](std::string s, std::vector<int> v) {
        if (s.empty()) throw std::invalid_argument("empty");
        return s.size() + v.size();
      };
      run_chunk<decltype(f), std::tuple<std::string, std::vector<int>>, true>(frame);
      break;
    }
    case 2: {
      auto f = [](const std::string& s) { return s.size() > 3 ? halve(-1) : 0; };
      run_chunk<decltype(f), std::tuple<std::string>, false>(frame);
      break;
    }
    default: {
      // A single task (apply_async, Process targets): arguments as one tuple.
      auto f = [](std::vector<std::string> v, bool b) { return b ? v.size() : 0; };
      std::string out;
      try {
        d::invoke_task<decltype(f), std::tuple<std::vector<std::string>, bool>>(nullptr, frame.args,
                                                                                frame.end, &out);
      } catch (const multiproc::ProcessError&) {
      }
      break;
    }
  }
  return 0;
}
