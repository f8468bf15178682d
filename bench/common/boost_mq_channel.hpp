// boost_mq_channel.hpp: boost::interprocess::message_queue (Boost >= 1.70, header-only) as a
// channel for queue_driver.hpp, the competitor "boost_mq".
//
// The parent creates a uniquely named queue and unlinks its name from /dev/shm at once, before
// fork(): the children use the inherited MAP_SHARED mapping, whose process-shared mutex and
// condition variables need no name, so nothing is left behind even when a run is killed.
// Sends and receives copy each message under the queue's single mutex.
#pragma once

#include <unistd.h>

#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace bench {

class BoostMqChannel {
 public:
  // max_msg: the largest message in bytes; max_num: how many messages the queue holds.
  BoostMqChannel(std::size_t max_msg, std::size_t max_num) : buf_(max_msg) {
    namespace bip = boost::interprocess;
    static std::atomic<int> counter{0};
    const std::string name = "multiproc_bench_mq_" + std::to_string(getpid()) + "_" +
                             std::to_string(counter.fetch_add(1));
    bip::message_queue::remove(name.c_str());
    mq_ = std::make_unique<bip::message_queue>(bip::create_only, name.c_str(), max_num, max_msg);
    bip::message_queue::remove(name.c_str());  // unlinked now; the mapping lives on
  }

  void put(std::uint64_t v) { mq_->send(&v, sizeof v, 0); }
  std::uint64_t get() {
    receive();
    std::uint64_t v = 0;
    std::memcpy(&v, buf_.data(), sizeof v);
    return v;
  }
  void put_bytes(std::span<const std::byte> item) { mq_->send(item.data(), item.size(), 0); }
  template <class F>
  void get_bytes(F&& visit) {
    visit(std::span<const std::byte>(buf_.data(), receive()));
  }

 private:
  std::size_t receive() {
    boost::interprocess::message_queue::size_type got = 0;
    unsigned prio = 0;
    mq_->receive(buf_.data(), buf_.size(), got, prio);  // buf_ must hold max_msg bytes
    return static_cast<std::size_t>(got);
  }

  std::unique_ptr<boost::interprocess::message_queue> mq_;
  std::vector<std::byte> buf_;
};

}  // namespace bench
