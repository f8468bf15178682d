// redis scenario, multiproc: redis::Pool with 2 local worker processes, and redis::Queue, on the
// scenario's redis-server (_redis_server.hpp). Every result and item is checked (count and
// checksum), as the other competitors do.
#include <multiproc/multiproc.hpp>
#include <multiproc/redis.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "_redis_server.hpp"
#include "bench_common.hpp"

namespace mp = multiproc;
namespace mpr = multiproc::redis;

namespace {

std::int64_t inc(std::int64_t x) {
  return x + 1;
}

bool emit_rate(const bench::Options& opt, const char* case_name, const char* unit, double n,
               std::int64_t t0, std::int64_t t1, const bench::Checksum& got,
               const bench::Checksum& want) {
  const bool ok = got == want;
  bench::emit(opt, {.case_name = case_name,
                    .metric = std::string_view(unit) == "tasks/s" ? "tasks_per_s" : "items_per_s",
                    .value = ok ? n / (static_cast<double>(t1 - t0) * 1e-9) : std::nan(""),
                    .unit = unit,
                    .ok = ok,
                    .check = got.str(),
                    .note = ok ? "" : "expected " + want.str()});
  return ok;
}

// A producer thread and a consumer (this thread), each with its own handle and connection.
bool queue_case(const bench::Options& opt, const std::string& url, const char* case_name,
                std::uint64_t n, size_t batch) {
  const std::string name = std::string("bench.") + case_name + "." + std::to_string(getpid());
  mpr::Queue<std::uint64_t> in(url, name), out(url, name);
  const std::int64_t t0 = bench::now_ns();
  std::thread producer([&] {
    if (batch == 1) {
      for (std::uint64_t i = 0; i < n; ++i) in.put(i);
    } else {
      std::vector<std::uint64_t> b;
      for (std::uint64_t i = 0; i < n; i += batch) {
        b.clear();
        for (std::uint64_t j = i; j < std::min<std::uint64_t>(n, i + batch); ++j) b.push_back(j);
        in.put_many(b);
      }
    }
  });
  bench::Checksum got;
  while (got.count < n) {
    if (batch == 1) {
      got.add(out.get());
    } else {
      for (auto v : out.get_many(batch)) got.add(v);
    }
  }
  const std::int64_t t1 = bench::now_ns();
  producer.join();
  out.unlink();
  return emit_rate(opt, case_name, "items/s", static_cast<double>(n), t0, t1, got,
                   bench::Checksum::of_range(0, n));
}

// One at a time with redis-benchmark's concurrency: `clients` handles (half producers, half
// consumers), each its own thread and connection, each put or get waiting for its reply. The
// one-producer case above is bound by round trips, this one by the server, as redis-benchmark's
// 50 clients are.
bool queue_clients_case(const bench::Options& opt, const std::string& url, const char* case_name,
                        std::uint64_t n, unsigned clients) {
  const std::string name = std::string("bench.") + case_name + "." + std::to_string(getpid());
  const unsigned sides = clients / 2;
  const std::uint64_t per = n / sides;
  n = per * sides;
  std::vector<bench::Checksum> got(sides);
  std::vector<std::thread> threads;
  std::vector<mpr::Queue<std::uint64_t>> handles;
  handles.reserve(2 * sides);
  for (unsigned i = 0; i < 2 * sides; ++i) handles.emplace_back(url, name);
  for (auto& h : handles) (void)h.qsize();  // every connection made before the clock starts
  const std::int64_t t0 = bench::now_ns();
  for (unsigned p = 0; p < sides; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint64_t i = p * per; i < (p + 1) * per; ++i) handles[p].put(i);
    });
  }
  for (unsigned c = 0; c < sides; ++c) {
    threads.emplace_back([&, c] {
      for (std::uint64_t i = 0; i < per; ++i) got[c].add(handles[sides + c].get());
    });
  }
  for (auto& t : threads) t.join();
  const std::int64_t t1 = bench::now_ns();
  bench::Checksum all;
  for (auto& g : got) all.merge(g);
  handles[0].unlink();
  return emit_rate(opt, case_name, "items/s", static_cast<double>(n), t0, t1, all,
                   bench::Checksum::of_range(0, n));
}

}  // namespace

int main(int argc, char** argv) {
  mp::init(argc, argv);
  const bench::Options opt =
      bench::parse_options(argc, argv, "redis", "multiproc", /*uses_placement=*/false);
  bench::RedisForBench server;
  bench::Status status;
  {
    mpr::Pool pool(server.url(), {.processes = 2, .name = "bench." + std::to_string(getpid())});
    for (int i = 0; i < 200; ++i) (void)pool.apply(inc, i);  // both workers up and warm

    {  // apply_async one by one, then every result
      const std::uint64_t n = bench::pick(opt.mode, 200, 20'000, 80'000);
      std::vector<mpr::AsyncResult<std::int64_t>> rs;
      rs.reserve(n);
      const std::int64_t t0 = bench::now_ns();
      for (std::uint64_t i = 0; i < n; ++i)
        rs.push_back(pool.apply_async(inc, static_cast<std::int64_t>(i)));
      bench::Checksum got;
      for (auto& r : rs) got.add(static_cast<std::uint64_t>(r.get()));
      const std::int64_t t1 = bench::now_ns();
      status.record(emit_rate(opt, "apply_async_1by1", "tasks/s", static_cast<double>(n), t0, t1,
                              got, bench::Checksum::of_range(1, n + 1)));
    }
    {  // apply_async(f, x).get() round trips
      const std::uint64_t n = bench::pick(opt.mode, 100, 5'000, 20'000);
      std::vector<double> rtt;
      bench::Checksum got;
      for (std::uint64_t i = 0; i < n; ++i) {
        const std::int64_t t0 = bench::now_ns();
        const std::int64_t r = pool.apply_async(inc, static_cast<std::int64_t>(i)).get();
        rtt.push_back(static_cast<double>(bench::now_ns() - t0) * 1e-3);
        got.add(static_cast<std::uint64_t>(r));
      }
      const bool ok = got == bench::Checksum::of_range(1, n + 1);
      for (auto [metric, p] : {std::pair{"p50_us", 50.0}, std::pair{"p99_us", 99.0}}) {
        bench::emit(opt, {.case_name = "apply_async_get",
                          .metric = metric,
                          .value = ok ? bench::percentile(rtt, p) : std::nan(""),
                          .unit = "us",
                          .higher_is_better = false,
                          .ok = ok,
                          .check = got.str()});
      }
      status.record(ok);
    }
    {  // map, automatic chunksize
      const std::uint64_t n = bench::pick(opt.mode, 10'000, 2'000'000, 8'000'000);
      std::vector<std::int64_t> xs(n);
      for (std::uint64_t i = 0; i < n; ++i) xs[i] = static_cast<std::int64_t>(i);
      const std::int64_t t0 = bench::now_ns();
      auto ys = pool.map(inc, xs);
      const std::int64_t t1 = bench::now_ns();
      bench::Checksum got;
      for (auto y : ys) got.add(static_cast<std::uint64_t>(y));
      status.record(emit_rate(opt, "map_auto", "tasks/s", static_cast<double>(n), t0, t1, got,
                              bench::Checksum::of_range(1, n + 1)));
    }
    pool.close();
    pool.join();
  }
  status.record(queue_case(opt, server.url(), "queue_1by1",
                           bench::pick(opt.mode, 1'000, 50'000, 200'000), 1));
  status.record(queue_clients_case(opt, server.url(), "queue_1by1_50clients",
                                   bench::pick(opt.mode, 1'000, 200'000, 800'000), 50));
  status.record(queue_case(opt, server.url(), "queue_batched",
                           bench::pick(opt.mode, 10'000, 2'000'000, 8'000'000), 64));
  return status.exit_code();
}
