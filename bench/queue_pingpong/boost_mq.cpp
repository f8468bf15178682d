// queue_pingpong over two boost::interprocess::message_queue (one each way), 8-byte messages; see
// common/boost_mq_channel.hpp.
#include "boost_mq_channel.hpp"
#include "queue_driver.hpp"

int main(int argc, char** argv) {
  const bench::Options opt = bench::parse_options(argc, argv, "queue_pingpong", "boost_mq");
  bench::BoostMqChannel to_child(8, 64), to_parent(8, 64);
  const bool ok = bench::run_pingpong(opt, "int64", bench::scaled(opt.mode, 500),
                                      bench::scaled(opt.mode, 5'000), to_child, to_parent);
  return ok ? 0 : 1;
}
