#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/fuzz_manager_requests.cpp, fuzz/fuzz_manager_replies.cpp and
fuzz/fuzz_manager_frames.cpp (fuzz/corpus/manager_{requests,replies,frames}/seed-*): valid
sessions, replies and frame streams, in the encoding of include/multiproc/detail/archive.hpp (numbers little-endian as their
bytes, bool one byte, strings and containers a u64 count first; a request is
tuple<u64 id, string method, string args>, a reply tuple<u8 kind, string payload>). Reproducers
of findings (crash-*, timeout-*, leak-*) are kept beside the seeds; this script leaves them be.
Run from the repository root: python3 fuzz/gen_manager_corpus.py"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v): return struct.pack('<B', v)
def u32(v): return struct.pack('<I', v)
def u64(v): return struct.pack('<Q', v)
def i64(v): return struct.pack('<q', v)
def f64(v): return struct.pack('<d', v)
def boolean(v): return b'\x01' if v else b'\x00'
def string(b): return u64(len(b)) + (b.encode() if isinstance(b, str) else b)


def request(obj, method, args=b''):
    return u64(obj) + string(method) + string(args)


def rec(req, client=0, drop=False):
    """One record of the requests target: control byte, u16 length, the frame."""
    return u8(client | (2 if drop else 0)) + struct.pack('<H', len(req)) + req


def create(kind, init=b'', name=''):
    return request(0, 'create', string(kind) + string(init) + string(name))


def acquire(obj, block=True, seconds=-1.0):
    return request(obj, 'acquire', boolean(block) + f64(seconds))


SIGNATURE = '16FuzzCounterProxy'  # typeid(FuzzCounterProxy).name(), Itanium ABI

REQUESTS = {
    'ping': [rec(request(0, 'ping')), rec(request(0, 'number_of_objects'))],
    'dict': [rec(create('dict')),
             rec(request(1, 'set', string(string('k')) + string(i64(5)))),
             rec(request(1, 'get', string(string('k')))),
             rec(request(1, 'get_opt', string(string('x')))),
             rec(request(1, 'contains', string(string('k')))),
             rec(request(1, 'items')), rec(request(1, 'size')),
             rec(request(1, 'pop', string(string('k')))),
             rec(request(1, 'get', string(string('k')))),
             rec(request(1, 'clear')), rec(request(1, '#release'))],
    'list': [rec(create('list')),
             rec(request(1, 'append', string(i64(1)))),
             rec(request(1, 'extend', u64(2) + string(i64(2)) + string(i64(3)))),
             rec(request(1, 'get', i64(-1))),
             rec(request(1, 'set', i64(0) + string(i64(9)))),
             rec(request(1, 'get', i64(7))),
             rec(request(1, 'copy')), rec(request(1, 'size')), rec(request(1, 'pop'))],
    'value_namespace': [rec(create('value', i64(7))), rec(request(1, 'get')),
                        rec(request(1, 'set', string(i64(8)))),
                        rec(create('namespace', b'', 'ns')),
                        rec(request(2, 'set', string('x') + string('i') + string(u32(3)))),
                        rec(request(2, 'get', string('x'))),
                        rec(request(2, 'contains', string('y'))),
                        rec(request(2, 'erase', string('x'))), rec(request(2, '#pin'))],
    'lock_two_clients': [rec(create('lock')), rec(acquire(1)),
                         rec(acquire(1, True, 0.0), client=1),
                         rec(request(1, 'release'), client=1),
                         rec(acquire(1, True, 1e300), client=1),
                         rec(request(0, 'ping'), drop=True),
                         rec(acquire(1, False), client=1)],
    'rlock_condition': [rec(create('rlock')), rec(acquire(1)), rec(acquire(1)),
                        rec(request(1, 'release')), rec(request(1, 'release')),
                        rec(request(1, 'release')),
                        rec(create('condition')), rec(acquire(2)),
                        rec(request(2, 'notify', i64(1))),
                        rec(request(2, 'wait', f64(0.0))),
                        rec(request(2, 'wait', f64(float('nan')))),
                        rec(request(2, 'release'))],
    'semaphores': [rec(create('semaphore', i64(1))), rec(acquire(1)), rec(acquire(1, True, 0.0)),
                   rec(request(1, 'release')), rec(request(1, 'get_value')),
                   rec(create('bounded_semaphore', i64(1))), rec(request(2, 'release')),
                   rec(create('semaphore', i64(-1)))],
    'barrier_event': [rec(create('barrier', i64(2))), rec(request(1, 'wait', f64(0.0))),
                      rec(request(1, 'broken')), rec(request(1, 'reset')),
                      rec(request(1, 'parties')), rec(request(1, 'n_waiting')),
                      rec(request(1, 'abort')), rec(request(1, 'wait', f64(-1.0))),
                      rec(create('barrier', i64(1))), rec(request(2, 'wait', f64(-1.0))),
                      rec(create('event')), rec(request(3, 'wait', f64(0.0))),
                      rec(request(3, 'set')), rec(request(3, 'is_set')),
                      rec(request(3, 'wait', f64(-1.0))), rec(request(3, 'clear'))],
    'queue': [rec(request(0, 'create_queue', u64(0) + boolean(False) + string(''))),
              rec(request(0, 'create_queue', u64(4) + boolean(True) + string('q')))],
    'user': [rec(request(0, 'create_user', string('Counter') + string(SIGNATURE) +
                         string(i64(5)) + string(''))),
             rec(request(1, 'call', u32(0) + string(i64(2)))),
             rec(request(1, 'call', u32(0) + string(i64(13)))),
             rec(request(1, 'call', u32(1) + string(b''))),
             rec(request(1, 'call', u32(2) + string(b''))),
             rec(request(0, 'create_user', string('Counter') + string('other') +
                         string(i64(5)) + string('c')))],
    'unknown': [rec(request(99, 'get')), rec(request(0, 'nothing')),
                rec(create('no-such-type')), rec(b'\x01\x02'),
                rec(request(0, 'ping'))],
}


def reply(kind, payload):
    return u8(kind) + string(payload)


REPLIES = {
    'id': u8(0) + reply(0, u64(3)),
    'bool': u8(1) + reply(0, boolean(True)),
    'get': u8(2) + reply(0, string(u64(2) + i64(1)[:4] + i64(2)[:4])),
    'get_opt': u8(3) + reply(0, b'\x01' + string(u64(1) + i64(1)[:4] + string('a'))),
    'items': u8(4) + reply(0, u64(1) + string(string('k')) + string(f64(1.5))),
    'copy': u8(5) + reply(0, u64(2) + string(b'\x01' + i64(4)) + string(b'\x00')),
    'namespace': u8(6) + reply(0, string('NSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE')
                                + string(string('v'))),
    'wait': u8(7) + reply(0, i64(1)),
    'user': u8(8) + reply(0, u64(1) + string('x')),
    'empty': u8(9) + reply(0, b''),
    'queue': u8(10) + reply(0, string('mp-no-such-queue')),
    'key_error': u8(11) + reply(1, b'no such key'),
    'index_error': u8(2) + reply(2, b'list index out of range'),
    'timeout': u8(1) + reply(3, b'timed out'),
    'error': u8(0) + reply(4, b'unknown type'),
    'broken': u8(7) + reply(5, b'the barrier is broken'),
    'bad_kind': u8(9) + reply(200, b'?'),
}


def frame(b):
    return u64(len(b)) + b


FRAMES = {  # first byte: the limit (odd: 64 bytes), then what the peer sent
    'one': u8(0) + frame(b'hello'),
    'three': u8(0) + frame(b'a') + frame(b'') + frame(b'ccc'),
    'small_limit': u8(1) + frame(b'x' * 70),
    'truncated': u8(0) + frame(b'abcdef')[:10],
    'big': u8(0) + frame(b'y' * 3000) + frame(b'z' * 900),
    'huge_length': u8(0) + u64(1 << 40) + b'abc',
}


def write(folder, seeds):
    path = os.path.join(HERE, 'corpus', folder)
    os.makedirs(path, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(path, 'seed-' + name), 'wb') as f:
            f.write(data)


write('manager_requests', {k: b''.join(v) for k, v in REQUESTS.items()})
write('manager_replies', REPLIES)
write('manager_frames', FRAMES)
