// How a task (a free function or a capture-free lambda, with its arguments) reaches another
// process. The caller's side instantiates `invoke_task<F, Args>`; what travels is that
// function's CodeAddress, the user function's CodeAddress (none for a lambda: its type is enough,
// it is rebuilt with F{}), and the arguments serialized as the task's own parameter types, so
// `Process p(greet, "world")` sends a std::string when greet takes one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <multiproc/detail/code_address.hpp>
#include <multiproc/serialization.hpp>

namespace multiproc::detail {

template <class OnOk, class OnErr>
struct Callbacks;  // pool_jobs.hpp

// Parameter types of a function pointer or of a lambda with one non-template call operator.
template <class F, class = void>
struct callable_params {
  static constexpr bool known = false;
};
template <class R, class... A>
struct callable_params<R (*)(A...)> {
  static constexpr bool known = true;
  using type = std::tuple<std::decay_t<A>...>;
  using declared = std::tuple<A...>;  // as written, references kept: for check_task()
};
template <class R, class... A>
struct callable_params<R (*)(A...) noexcept> : callable_params<R (*)(A...)> {};
template <class C, class R, class... A>
struct member_call_params {
  static constexpr bool known = true;
  using type = std::tuple<std::decay_t<A>...>;
  using declared = std::tuple<A...>;
};
template <class M>
struct call_operator_params;
template <class C, class R, class... A>
struct call_operator_params<R (C::*)(A...) const> : member_call_params<C, R, A...> {};
template <class C, class R, class... A>
struct call_operator_params<R (C::*)(A...) const noexcept> : member_call_params<C, R, A...> {};
template <class C, class R, class... A>
struct call_operator_params<R (C::*)(A...)> : member_call_params<C, R, A...> {};
template <class C, class R, class... A>
struct call_operator_params<R (C::*)(A...) noexcept> : member_call_params<C, R, A...> {};
template <class F>
struct callable_params<F, std::void_t<decltype(&F::operator())>>
    : call_operator_params<decltype(&F::operator())> {};

// The tuple the arguments travel as: the task's parameter types where they can be read off,
// the given arguments' decayed types otherwise (generic lambdas).
template <class F, class... Args>
struct task_args {
  using type = std::tuple<std::decay_t<Args>...>;
};
template <class F, class... Args>
requires callable_params<F>::known struct task_args<F, Args...> {
  using type = typename callable_params<F>::type;
};
template <class F, class... Args>
using task_args_t = typename task_args<F, Args...>::type;

template <class F>
inline constexpr bool is_stateless_lambda_v =
    std::is_class_v<F>&& std::is_empty_v<F>&& std::is_default_constructible_v<F>;

template <class F>
inline constexpr bool is_task_callable_v = is_stateless_lambda_v<F> ||
                                           (std::is_pointer_v<F> &&
                                            std::is_function_v<std::remove_pointer_t<F>>);

template <class F, class ArgsTuple>
struct task_result;
template <class F, class... A>
struct task_result<F, std::tuple<A...>> {
  using type = std::invoke_result_t<F&, A&...>;
};
template <class F, class ArgsTuple>
using task_result_t = typename task_result<F, ArgsTuple>::type;

// Runs in the child. Decodes arguments from [p, end), calls the task, appends the encoded
// result to *result (when non-null and the task returns something).
using Invoker = void (*)(const void* fn, const char* p, const char* end, std::string* result);

template <class F, class ArgsTuple>
void invoke_task(const void* fn, const char* p, const char* end, std::string* result) {
  ArgsTuple args = load<ArgsTuple>(p, end);
  auto call = [&](auto&... a) -> decltype(auto) {
    if constexpr (is_stateless_lambda_v<F>) {
      (void)fn;
      return F{}(a...);
    } else {
      return reinterpret_cast<F>(const_cast<void*>(fn))(a...);
    }
  };
  using R = task_result_t<F, ArgsTuple>;
  if constexpr (std::is_void_v<R>) {
    std::apply(call, args);
  } else {
    decltype(auto) r = std::apply(call, args);
    if (result) dump(*result, r);
  }
}

// What crosses to the child: which invoker, which function, and the encoded arguments.
struct TaskCode {
  CodeAddress invoker;
  CodeAddress fn;
  bool has_fn = false;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(invoker, fn, has_fn);
  }
};

// --- compile-time checks -------------------------------------------------------------------------
// check_task<F, Args...>() stops a task that cannot work at the first reason found, with one
// static_assert whose message is the first error line the user sees: it names the problem and the
// fix. Callers use it in a constant expression (static_assert(check_task<...>())) as the first
// statement of an API entry point, so that it is instantiated before anything else that would fail
// with a less readable error (invoke_result, tuple constructors, cereal).

template <class P>
inline constexpr bool is_mutable_lvalue_ref_v =
    std::is_lvalue_reference_v<P> && !std::is_const_v<std::remove_reference_t<P>>;

template <class Declared>
struct has_mutable_ref_param : std::false_type {};
template <class... P>
struct has_mutable_ref_param<std::tuple<P...>>
    : std::bool_constant<(is_mutable_lvalue_ref_v<P> || ...)> {};

template <class F, class = void>
struct task_takes_mutable_ref : std::false_type {};
template <class F>
struct task_takes_mutable_ref<F, std::enable_if_t<callable_params<F>::known>>
    : has_mutable_ref_param<typename callable_params<F>::declared> {};

template <class T>
struct is_callbacks : std::false_type {};
template <class OnOk, class OnErr>
struct is_callbacks<Callbacks<OnOk, OnErr>> : std::true_type {};
// Pool's apply_async/map_async/starmap_async take an optional Callbacks first: not a task.
template <class T>
inline constexpr bool is_callbacks_v = is_callbacks<std::remove_cvref_t<T>>::value;

// What Pool's catch-all overloads take: neither a task nor the optional Callbacks in front of one.
template <class F>
concept not_a_task = !is_task_callable_v<F> && !is_callbacks_v<F>;

template <class F, class ArgsTuple>
struct task_invocable : std::false_type {};
template <class F, class... A>
struct task_invocable<F, std::tuple<A...>> : std::is_invocable<F&, A&...> {};

// Fails (naming the type) on the first element of Tuple that cannot cross; true otherwise.
template <class... P>
constexpr bool require_first_transferable(std::tuple<P...>*) {
  bool failed = false;
  ((failed || Transferable<P> ? void() : (failed = true, require_transferable<P>())), ...);
  return !failed;
}

// The checks on a task whose arguments travel as ArgsTuple (starmap reads them off its items).
template <class F, class ArgsTuple>
constexpr bool check_task_tuple() {
  if constexpr (!is_task_callable_v<F>) {
    static_assert(dependent_false_v<F>,
                  "multiproc: a task may not capture: pass the state as an argument (a task is a "
                  "free function or a capture-free lambda; it runs in another process)");
    return false;
  } else if constexpr (task_takes_mutable_ref<F>::value) {
    static_assert(
        dependent_false_v<F>,
        "multiproc: a task may not take a non-const reference (T&): it runs in another "
        "process, so its changes would be lost; take T or const T& and return the result");
    return false;
  } else if constexpr (!require_first_transferable(static_cast<ArgsTuple*>(nullptr))) {
    return false;  // require_transferable said why, naming the parameter type
  } else if constexpr (!task_invocable<F, ArgsTuple>::value) {
    static_assert(dependent_false_v<F>,
                  "multiproc: the task cannot be called with its arguments as lvalues: take each "
                  "parameter by value or by const reference");
    return false;
  } else if constexpr (!std::is_void_v<task_result_t<F, ArgsTuple>> &&
                       !Transferable<task_result_t<F, ArgsTuple>>) {
    require_transferable<task_result_t<F, ArgsTuple>>();  // names the result type
    return false;
  } else {
    return true;
  }
}

template <class F, class... Args>
constexpr bool check_task() {
  if constexpr (!is_task_callable_v<F>) {
    return check_task_tuple<F, std::tuple<>>();
  } else {
    using ArgsTuple = task_args_t<F, Args...>;
    if constexpr (std::tuple_size_v<ArgsTuple> != sizeof...(Args)) {
      static_assert(dependent_false_v<F>,
                    "multiproc: wrong number of arguments for this task: pass one per parameter "
                    "(map and imap: a task of one parameter; starmap: one per tuple element)");
      return false;
    } else if constexpr (!check_task_tuple<F, ArgsTuple>()) {
      return false;
    } else if constexpr (!std::is_constructible_v<ArgsTuple, Args&&...>) {
      static_assert(dependent_false_v<F>,
                    "multiproc: the arguments do not convert to the task's parameter types: pass "
                    "values the parameters can be made from");
      return false;
    } else {
      return true;
    }
  }
}

// Encoding of one task, shared by Process and Pool. Does nothing more once check_task has failed,
// so that the user sees its message and not a cascade.
template <class F, class... Args>
TaskCode make_task_code() {
  TaskCode code;
  if constexpr (check_task<F, Args...>()) {
    using ArgsTuple = task_args_t<F, Args...>;
    Invoker inv = &invoke_task<F, ArgsTuple>;
    code.invoker = encode_code_address(reinterpret_cast<const void*>(inv));
  }
  return code;
}

template <class F>
void set_task_function(TaskCode& code, const F& f) {
  if constexpr (!is_task_callable_v<F>) {
    (void)code;  // check_task has said why
    (void)f;
  } else if constexpr (!is_stateless_lambda_v<F>) {
    code.fn = encode_code_address(reinterpret_cast<const void*>(f));
    code.has_fn = true;
  } else {
    (void)f;
  }
}

template <class Tuple, size_t... I>
constexpr void require_all_transferable(std::index_sequence<I...>) {
  (require_transferable<std::tuple_element_t<I, Tuple>>(), ...);
}

// Encodes the arguments as the task's parameter types.
template <class F, class... Args>
void encode_task_args(std::string& out, Args&&... args) {
  if constexpr (check_task<F, Args...>()) {
    using ArgsTuple = task_args_t<F, Args...>;
    dump(out, ArgsTuple(std::forward<Args>(args)...));
  } else {
    (void)out;
    ((void)args, ...);
  }
}

// Encoded task arguments that may never reach a child (a Process destroyed unstarted, or whose
// start failed). Serializing a handle took an in-flight reference for its copy (segment.hpp);
// decoding the copy here and dropping it gives that reference back, so the segments go when
// nothing else holds them. `sent()` says a child has taken them.
class EncodedArgs {
 public:
  EncodedArgs() = default;
  template <class ArgsTuple>
  void set(std::string bytes) {
    release_unsent();
    bytes_ = std::move(bytes);
    discard_ = &discard<ArgsTuple>;
  }
  const std::string& bytes() const { return bytes_; }
  void sent() { discard_ = nullptr; }
  ~EncodedArgs() { release_unsent(); }
  EncodedArgs(EncodedArgs&& o) noexcept
      : bytes_(std::move(o.bytes_)), discard_(std::exchange(o.discard_, nullptr)) {}
  EncodedArgs& operator=(EncodedArgs&& o) noexcept {
    if (this != &o) {
      release_unsent();
      bytes_ = std::move(o.bytes_);
      discard_ = std::exchange(o.discard_, nullptr);
    }
    return *this;
  }
  EncodedArgs(const EncodedArgs&) = delete;
  EncodedArgs& operator=(const EncodedArgs&) = delete;

 private:
  template <class ArgsTuple>
  static void discard(const std::string& bytes) {
    const char* p = bytes.data();
    (void)load<ArgsTuple>(p, bytes.data() + bytes.size());
  }
  void release_unsent() noexcept {
    if (!discard_) return;
    auto d = std::exchange(discard_, nullptr);
    try {
      d(bytes_);
    } catch (...) {
      // A handle whose segment is already gone: nothing left to release.
    }
  }
  std::string bytes_;
  void (*discard_)(const std::string&) = nullptr;
};

template <class F, class... Args>
void encode_task_args(EncodedArgs& out, Args&&... args) {
  std::string bytes;
  encode_task_args<F>(bytes, std::forward<Args>(args)...);
  out.set<task_args_t<F, Args...>>(std::move(bytes));
}

struct ResolvedTask {
  Invoker invoker = nullptr;
  const void* fn = nullptr;
};
ResolvedTask resolve_task(const TaskCode& code);

}  // namespace multiproc::detail
