// Lua 5.4 (Debian's liblua5.4-dev, linked statically: see Package.swift) and what Swift cannot
// reach by itself: the C API's macros, a memory-limited allocator and the instruction limit.
#include <lua5.4/lua.h>
#include <lua5.4/lualib.h>
#include <lua5.4/lauxlib.h>
#include <stdlib.h>

/// A state's memory account: while `enforce` is set, an allocation that would take `used`
/// past `limit`, or the count all states share (`shared`, also holding the bodies read for
/// scripts) past `shared_limit`, fails (Lua raises "not enough memory" in the script).
/// `exceeded` is set by the instruction hook.
typedef struct {
    size_t used;
    size_t limit;
    int enforce;
    int exceeded;
    size_t *shared;
    size_t shared_limit;
} airlock_lua_account;

/// Adds `n` to `*shared` unless that takes it past `limit`; 1 when it did.
static inline int airlock_shared_reserve(size_t *shared, size_t limit, size_t n) {
    size_t now = __atomic_load_n(shared, __ATOMIC_RELAXED);
    do {
        if (now > limit || n > limit - now) return 0;
    } while (!__atomic_compare_exchange_n(shared, &now, now + n, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return 1;
}

static inline void airlock_shared_release(size_t *shared, size_t n) { __atomic_fetch_sub(shared, n, __ATOMIC_RELAXED); }

static inline size_t airlock_shared_load(size_t *shared) { return __atomic_load_n(shared, __ATOMIC_RELAXED); }

static inline void *airlock_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    airlock_lua_account *account = (airlock_lua_account *)ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        account->used -= old;
        airlock_shared_release(account->shared, old);
        return NULL;
    }
    if (nsize <= old) {
        void *shrunk = realloc(ptr, nsize);
        // A block that cannot shrink is still a good block.
        if (!shrunk) return ptr;
        account->used -= old - nsize;
        airlock_shared_release(account->shared, old - nsize);
        return shrunk;
    }
    size_t grow = nsize - old;
    if (account->enforce) {
        if (account->used + grow > account->limit) return NULL;
        if (!airlock_shared_reserve(account->shared, account->shared_limit, grow)) return NULL;
    } else {
        __atomic_fetch_add(account->shared, grow, __ATOMIC_RELAXED);
    }
    void *grown = realloc(ptr, nsize);
    if (!grown) {
        airlock_shared_release(account->shared, grow);
        return NULL;
    }
    account->used += grow;
    return grown;
}

static inline lua_State *airlock_lua_newstate(airlock_lua_account *account) {
    return lua_newstate(airlock_lua_alloc, account);
}

/// Marks the account and yields out of the script: a yield no pcall in it can catch. Where a
/// yield is not possible (inside a callback from C, such as gsub's), Lua raises an error
/// instead; from then on the hook runs at every instruction, so the first one outside such a
/// callback yields.
static void airlock_lua_instruction_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    void *ud = NULL;
    lua_getallocf(L, &ud);
    ((airlock_lua_account *)ud)->exceeded = 1;
    lua_sethook(L, airlock_lua_instruction_hook, LUA_MASKCOUNT, 1);
    lua_yield(L, 0);
}

/// After `count` VM instructions in thread `L`, the thread yields with `exceeded` set.
static inline void airlock_lua_limit_instructions(lua_State *L, int count) {
    lua_sethook(L, airlock_lua_instruction_hook, LUA_MASKCOUNT, count);
}

static inline void airlock_lua_open_safe_libraries(lua_State *L) {
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 1);
    lua_settop(L, 0);
}

static inline int airlock_lua_registry_index(void) { return LUA_REGISTRYINDEX; }
static inline void airlock_lua_pop(lua_State *L, int n) { lua_pop(L, n); }
static inline void airlock_lua_newtable(lua_State *L) { lua_newtable(L); }
static inline int airlock_lua_pcall(lua_State *L, int nargs, int nresults) { return lua_pcall(L, nargs, nresults, 0); }
static inline const char *airlock_lua_tostring(lua_State *L, int index, size_t *length) { return lua_tolstring(L, index, length); }
