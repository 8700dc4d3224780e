/* masq-cni's executable: the interpreter (libpython linked in statically) started isolated on
 * the bundle it sits in, running `masqd.cni`.
 *
 * The bundle is the directory of this executable (found through /proc/self/exe, or argv[0]
 * where /proc is not mounted): its lib/ holds the byte-compiled standard library and masqd.
 * Isolated: no PYTHON* variable, user site or current directory is looked at (a runtime hands
 * a plugin an environment it chose; the host's own Python, if any, plays no part). No site
 * import, no bytecode written (the host's CNI bin directory may be read-only), UTF-8 whatever
 * the locale (an empty environment is the C locale).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int bundle_dir(const char *argv0, char *out, size_t size) {
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) {
        path[n] = '\0';
    } else if (argv0 == NULL || strchr(argv0, '/') == NULL || realpath(argv0, path) == NULL) {
        return -1;
    }
    char *slash = strrchr(path, '/');
    if (slash == NULL || (size_t)(slash - path) >= size) {
        return -1;
    }
    *slash = '\0';
    strcpy(out, path[0] ? path : "/");
    return 0;
}

static void fail(const char *what, PyStatus status) {
    /* Before Python runs, so not the CNI error object: a runtime logs this as it is. */
    fprintf(stderr, "masq-cni: cannot start its interpreter: %s%s%s\n", what,
            status.err_msg ? ": " : "", status.err_msg ? status.err_msg : "");
    exit(status.exitcode ? status.exitcode : 1);
}

int main(int argc, char **argv) {
    char home[PATH_MAX], lib[PATH_MAX + 8];
    if (bundle_dir(argc > 0 ? argv[0] : NULL, home, sizeof home) != 0) {
        fprintf(stderr, "masq-cni: cannot find its own directory (no /proc/self/exe)\n");
        return 1;
    }
    snprintf(lib, sizeof lib, "%s/lib", home);

    PyPreConfig preconfig;
    PyPreConfig_InitIsolatedConfig(&preconfig);
    preconfig.utf8_mode = 1;
    PyStatus status = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(status)) fail("pre-initialization", status);

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.write_bytecode = 0;
    /* As python does: SIGPIPE ignored (a closed pipe is an error to handle, not death), SIGINT
     * as KeyboardInterrupt. The isolated configuration leaves signals alone otherwise. */
    config.install_signal_handlers = 1;
    config.module_search_paths_set = 1;
    wchar_t *wlib = Py_DecodeLocale(lib, NULL);
    if (wlib == NULL) fail("decoding its path", PyStatus_NoMemory());
    status = PyWideStringList_Append(&config.module_search_paths, wlib);
    PyMem_RawFree(wlib);
    if (PyStatus_Exception(status)) fail("module path", status);
    status = PyConfig_SetBytesString(&config, &config.home, home);
    if (PyStatus_Exception(status)) fail("home", status);
    status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (PyStatus_Exception(status)) fail("arguments", status);
    status = PyConfig_SetString(&config, &config.run_module, L"masqd.cni");
    if (PyStatus_Exception(status)) fail("module", status);
    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) fail("initialization", status);
    return Py_RunMain();
}
