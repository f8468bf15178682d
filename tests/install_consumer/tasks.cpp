// A task function that lives in a shared library, not in the program: a spawned child finds it
// by the library's path and its offset there.
int triple(int x) {
  return 3 * x;
}
