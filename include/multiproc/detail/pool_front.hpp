// The API's front that Pool and ThreadPool share (internal): every public overload of apply,
// apply_async, map, map_async, starmap, starmap_async, imap and imap_unordered, written once.
//
// A pool derives from PoolFront<itself> and supplies, privately (PoolFront is its friend):
//   template <class F> static constexpr bool accepts_task;   which callables are tasks
//   apply_impl(Callbacks, f, args...)                        -> its AsyncResult
//   map_impl<kStar>(Callbacks, f, range, MapOptions)         -> its MapResult
//   imap_impl(f, range, MapOptions, bool ordered)            -> its IMapResult
// so the two pools differ only in how a call travels (encoded to a worker process, or a closure
// for a thread), never in what the user can call.
#pragma once

#include <concepts>
#include <cstddef>
#include <exception>
#include <map>
#include <ranges>
#include <utility>
#include <vector>

#include <multiproc/detail/pool_jobs.hpp>
#include <multiproc/detail/task.hpp>

namespace multiproc {

// Per-call options for map / imap / starmap.
struct MapOptions {
  size_t chunksize = 0;   // 0 = automatic: for map len / (4 * processes), for imap 1
  bool progress = false;  // draw a progress bar on stderr
};

// callback / error_callback for apply_async, map_async, starmap_async:
//   pool.apply_async(mp::callbacks(on_value, on_error), task, args...)
// on_value gets the result (nothing for void tasks); on_error gets a std::exception_ptr. They run
// in a thread of this process that processes the pool's results.
template <class OnOk, class OnErr = std::nullptr_t>
detail::Callbacks<OnOk, OnErr> callbacks(OnOk on_value, OnErr on_error = nullptr) {
  return {std::move(on_value), std::move(on_error)};
}

namespace detail {

// imap's input is read lazily, a chunk at a time, by whoever feeds the pool: `input` has the
// range's `view`, an iterator `it` into it and `started`, and the range is begun at the first
// read rather than at the call. Appends items to `chunk` until it holds `size` or the input
// ends; an item that throws propagates, with those read before it in `chunk`.
template <class Input, class T>
void read_input_chunk(Input& input, std::vector<T>& chunk, size_t size) {
  if (!input.started) {
    input.it = std::ranges::begin(input.view);
    input.started = true;
  }
  while (chunk.size() < size && input.it != std::ranges::end(input.view)) {
    chunk.emplace_back(*input.it);
    ++input.it;
  }
}

// MapResult::outcomes() of the pools: one Outcome per call, its error where it failed, else
// value_at(i).
template <class V, class ValueAt>
std::vector<Outcome<V>> map_outcomes(size_t n, const std::map<size_t, std::exception_ptr>& errors,
                                     ValueAt value_at) {
  std::vector<Outcome<V>> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    auto it = errors.find(i);
    out.push_back(it == errors.end() ? Outcome<V>(value_at(i)) : Outcome<V>(it->second));
  }
  return out;
}

template <class D, class F>
concept front_task = D::template accepts_task<std::decay_t<F>>;

// A map call's last argument: a chunk size (Python's positional chunksize) or MapOptions. A braced
// list (`{.chunksize = 10, .progress = true}`) deduces nothing and takes the default, MapOptions.
template <class O>
concept map_options_arg = std::same_as<O, MapOptions> || std::convertible_to<O, size_t>;

template <class O>
MapOptions as_map_options(O o) {
  if constexpr (std::same_as<O, MapOptions>)
    return o;
  else
    return MapOptions{static_cast<size_t>(o)};
}

template <class Derived>
class PoolFront {
 public:
  // ---- apply ----
  template <class F, class... A>
  requires front_task<Derived, F>
  auto apply(F&& f, A&&... args) {
    return apply_async(std::forward<F>(f), std::forward<A>(args)...).get();
  }
  template <class F, class... A>
  requires front_task<Derived, F>
  auto apply_async(F&& f, A&&... args) {
    return self().apply_impl(callbacks(nullptr, nullptr), std::forward<F>(f),
                             std::forward<A>(args)...);
  }
  template <class OnOk, class OnErr, class F, class... A>
  requires front_task<Derived, F>
  auto apply_async(Callbacks<OnOk, OnErr> cb, F&& f, A&&... args) {
    return self().apply_impl(std::move(cb), std::forward<F>(f), std::forward<A>(args)...);
  }

  // ---- map / starmap: the last argument is a chunk size (0 = automatic) or MapOptions ----
  template <class F, std::ranges::input_range Range, map_options_arg O = MapOptions>
  requires front_task<Derived, F>
  auto map(F&& f, Range&& items, O options = {}) {
    return map_async(std::forward<F>(f), std::forward<Range>(items), options).get();
  }
  template <class F, std::ranges::input_range Range, map_options_arg O = MapOptions>
  requires front_task<Derived, F>
  auto map_async(F&& f, Range&& items, O options = {}) {
    return map_async(callbacks(nullptr, nullptr), std::forward<F>(f), std::forward<Range>(items),
                     options);
  }
  template <class OnOk, class OnErr, class F, std::ranges::input_range Range,
            map_options_arg O = MapOptions>
  requires front_task<Derived, F>
  auto map_async(Callbacks<OnOk, OnErr> cb, F&& f, Range&& items, O options = {}) {
    return self().template map_impl<false>(std::move(cb), std::forward<F>(f),
                                           std::forward<Range>(items), as_map_options(options));
  }

  template <class F, std::ranges::input_range Range, map_options_arg O = MapOptions>
  requires front_task<Derived, F>
  auto starmap(F&& f, Range&& items, O options = {}) {
    return starmap_async(std::forward<F>(f), std::forward<Range>(items), options).get();
  }
  template <class F, std::ranges::input_range Range, map_options_arg O = MapOptions>
  requires front_task<Derived, F>
  auto starmap_async(F&& f, Range&& items, O options = {}) {
    return starmap_async(callbacks(nullptr, nullptr), std::forward<F>(f),
                         std::forward<Range>(items), options);
  }
  template <class OnOk, class OnErr, class F, std::ranges::input_range Range,
            map_options_arg O = MapOptions>
  requires front_task<Derived, F>
  auto starmap_async(Callbacks<OnOk, OnErr> cb, F&& f, Range&& items, O options = {}) {
    return self().template map_impl<true>(std::move(cb), std::forward<F>(f),
                                          std::forward<Range>(items), as_map_options(options));
  }

  // ---- imap: a chunk size (0 or none = 1) or MapOptions ----
  template <class F, std::ranges::input_range Range, map_options_arg O = MapOptions>
  requires front_task<Derived, F>
  auto imap(F&& f, Range&& items, O options = {}) {
    return self().imap_impl(std::forward<F>(f), std::forward<Range>(items), as_map_options(options),
                            true);
  }
  template <class F, std::ranges::input_range Range, map_options_arg O = MapOptions>
  requires front_task<Derived, F>
  auto imap_unordered(F&& f, Range&& items, O options = {}) {
    return self().imap_impl(std::forward<F>(f), std::forward<Range>(items), as_map_options(options),
                            false);
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
};

}  // namespace detail
}  // namespace multiproc
