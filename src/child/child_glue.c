/* child_glue — the Python half of a cell, as source the child compiles at
 * start-up into a dict no module holds: REPL-style compilation, tracebacks
 * that start at the model's code, the finishing forms that need the cell's
 * source, and parsing JSON and JSON lines inputs with a summary. */
#include "child.h"

#include "repl_module.h"

#include <stdio.h>

/* The Python half of a cell: REPL-style compilation (the last expression is
 * evaluated separately so its value can be shown), tracebacks that start at
 * the model's code, and the finishing forms that need the cell's source.
 * Source lines come from linecache entries we add.
 *
 * compile_cell also returns the string literals the cell passes to
 * FINAL_VAR: FINAL_VAR("name") naming no variable is an error (the name is
 * the classic wrong answer), while FINAL_VAR(x) whose value names no
 * variable answers with that value (the reference's models write it).
 *
 * final_literal: a cell that fails on a line `FINAL(some words)` — a
 * NameError for one of the words, or a SyntaxError on that line — meant the
 * words as the answer, as the reference library (which read FINAL(...)
 * anywhere in the reply) took them. One or more words (identifiers,
 * numbers, with trailing punctuation), nothing that calls or computes. */
static const char glue_source[] =
    "import ast, collections, itertools, json, linecache, re, traceback\n"
    "_KEEP_SOURCES = 200\n"
    "def compile_cell(src, filename, number):\n"
    "    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)\n"
    "    linecache.cache.pop('<cell-%d>' % (number - _KEEP_SOURCES), None)\n"
    "    tree = ast.parse(src, filename, 'exec')\n"
    "    literals = frozenset(n.args[0].value.strip(\" \\t\\r\\n'\\\"`\") for n in ast.walk(tree)\n"
    "                         if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)\n"
    "                         and n.func.id == 'FINAL_VAR' and n.args\n"
    "                         and isinstance(n.args[0], ast.Constant)\n"
    "                         and isinstance(n.args[0].value, str))\n"
    "    last = None\n"
    "    if tree.body and isinstance(tree.body[-1], ast.Expr):\n"
    "        last = compile(ast.Expression(tree.body.pop().value), filename, 'eval')\n"
    "    return compile(tree, filename, 'exec'), last, literals\n"
    "def format_exception(exc, interrupt_text):\n"
    "    tb = exc.__traceback__\n"
    "    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith('<cell-'):\n"
    "        tb = tb.tb_next\n"
    "    lines = traceback.format_exception(type(exc), exc, tb)\n"
    "    if isinstance(exc, KeyboardInterrupt):\n"
    "        lines = lines[:-1] + [interrupt_text + '\\n']\n"
    "    return ''.join(lines)\n"
    "_WORD = r\"(?:[A-Za-z_][\\w'-]*|\\d[\\w.]*)[.:;!?]*\"\n"
    "_FINAL_WORDS = re.compile(r'[ \\t]*FINAL\\([ \\t]*(' + _WORD + r'(?:(?:[ \\t]*,[ \\t]*|[ \\t]+)' +\n"
    "                          _WORD + r')*)[ \\t]*\\)[ \\t]*(?:#.*)?')\n"
    "def final_literal(exc, src):\n"
    "    if isinstance(exc, SyntaxError):\n"
    "        if not str(exc.filename).startswith('<cell-'):\n"
    "            return None\n"
    "        line = exc.lineno\n"
    "    elif type(exc) is NameError:\n"
    "        tb = exc.__traceback__\n"
    "        while tb is not None and tb.tb_next is not None:\n"
    "            tb = tb.tb_next\n"
    "        if tb is None or not tb.tb_frame.f_code.co_filename.startswith('<cell-'):\n"
    "            return None\n"
    "        line = tb.tb_lineno\n"
    "    else:\n"
    "        return None\n"
    "    lines = src.splitlines()\n"
    "    if not line or line > len(lines):\n"
    "        return None\n"
    "    if len(lines[line - 1]) > 500:\n"
    "        return None\n"
    "    m = _FINAL_WORDS.fullmatch(lines[line - 1])\n"
    "    if m is None or not re.search(r'[A-Za-z_]', m.group(1)):\n"
    "        return None\n"
    "    if isinstance(exc, NameError) and exc.name not in re.findall(r'[A-Za-z_]\\w*', m.group(1)):\n"
    "        return None\n"
    "    return m.group(1)\n"
    "_decoder = json.JSONDecoder()\n"
    "class InputError(Exception):\n"
    "    pass\n"
    "def _json_value(text, name):\n"
    "    try:\n"
    "        return _decoder.decode(text[1:] if text.startswith('\\ufeff') else text)\n"
    "    except json.JSONDecodeError as e:\n"
    "        raise InputError('%s is not valid JSON: %s at line %d, column %d'\n"
    "                         % (name, e.msg, e.lineno, e.colno)) from None\n"
    "    except RecursionError:\n"
    "        raise InputError('%s: the JSON is nested too deeply to load' % name) from None\n"
    "def _json_lines(text, name, out, problems):\n"
    "    skipped = number = pos = 0\n"
    "    end = len(text)\n"
    "    while pos < end:\n"
    "        nl = text.find('\\n', pos)\n"
    "        if nl < 0:\n"
    "            nl = end\n"
    "        number += 1\n"
    "        line = text[pos:nl]\n"
    "        pos = nl + 1\n"
    "        if not line.strip():\n"
    "            continue\n"
    "        try:\n"
    "            out.append(_decoder.decode(line))\n"
    "        except (json.JSONDecodeError, RecursionError) as e:\n"
    "            skipped += 1\n"
    "            if len(problems) < 20:\n"
    "                why = ('%s (column %d)' % (e.msg, e.colno)\n"
    "                       if isinstance(e, json.JSONDecodeError) else 'nested too deeply')\n"
    "                problems.append('%s line %d: not valid JSON: %s; skipped' % (name, number, why))\n"
    "    return skipped\n"
    "def _cut(v, depth):\n"
    "    if isinstance(v, str):\n"
    "        return v if len(v) <= 160 else v[:160] + '...'\n"
    "    if depth >= 3:\n"
    "        return v if not isinstance(v, (list, dict)) else ('[...]' if isinstance(v, list) else '{...}')\n"
    "    if isinstance(v, list):\n"
    "        out = [_cut(x, depth + 1) for x in v[:4]]\n"
    "        return out + ['... %d more' % (len(v) - 4)] if len(v) > 4 else out\n"
    "    if isinstance(v, dict):\n"
    "        out = {k: _cut(x, depth + 1) for k, x in itertools.islice(v.items(), 10)}\n"
    "        if len(v) > 10:\n"
    "            out['...'] = '%d more keys' % (len(v) - 10)\n"
    "        return out\n"
    "    return v\n"
    "def _summary(value, fmt, problems, skipped):\n"
    "    s = {'format': fmt, 'type': type(value).__name__, 'skipped': skipped, 'problems': problems}\n"
    "    if isinstance(value, (list, dict, str)):\n"
    "        s['length'] = len(value)\n"
    "    if isinstance(value, dict):\n"
    "        s['keys'] = [str(k)[:100] for k in itertools.islice(value, 40)]\n"
    "        items = value.values()\n"
    "    else:\n"
    "        items = value if isinstance(value, list) else ()\n"
    "    types = collections.Counter(type(x).__name__ for x in itertools.islice(items, 10000))\n"
    "    if types:\n"
    "        s['item_types'] = dict(types.most_common(6))\n"
    "    if isinstance(value, list) and value and isinstance(value[0], dict):\n"
    "        s['first_keys'] = [str(k)[:100] for k in itertools.islice(value[0], 40)]\n"
    "    s['preview'] = repr(_cut(value, 0))[:2000]\n"
    "    return json.dumps(s)\n"
    "def parse_input(obj, fmt, name):\n"
    "    problems = []\n"
    "    skipped = 0\n"
    "    texts = [(name, obj)] if isinstance(obj, str) else list(obj.items())\n"
    "    if fmt == 'jsonl':\n"
    "        value = []\n"
    "        for n, text in texts:\n"
    "            skipped += _json_lines(text, n, value, problems)\n"
    "        if not value and skipped:\n"
    "            raise InputError('no line of the JSON lines input is valid JSON (%s)' % problems[0])\n"
    "    elif isinstance(obj, str):\n"
    "        value = _json_value(obj, name)\n"
    "    else:\n"
    "        value = {n: _json_value(text, n) for n, text in texts}\n"
    "    return value, _summary(value, fmt, problems, skipped)\n";

/* The glue runs in a dict of its own that no module holds: model code
 * cannot reach it through sys.modules, its functions' code cannot be
 * replaced (the audit hook) and the dict is put back before every cell
 * (repl_restore). The import guard counts it as library code. */
int child_load_glue(child *c, char *err, size_t errlen)
{
    PyObject *dict = PyDict_New();
    PyObject *name = PyUnicode_FromString("_rlm_glue");
    c->glue = dict;
    int ok = dict && name && PyDict_SetItemString(dict, "__builtins__", c->builtins) == 0 &&
             PyDict_SetItemString(dict, "__name__", name) == 0 &&
             repl_set_library_globals(dict) == 0;
    Py_XDECREF(name);
    if (!ok)
        goto fail;
    PyObject *code = Py_CompileString(glue_source, "<rlm-glue>", Py_file_input);
    if (!code)
        goto fail;
    PyObject *rc = PyEval_EvalCode(code, dict, dict);
    Py_DECREF(code);
    if (!rc)
        goto fail;
    Py_DECREF(rc);
    c->compile_cell = PyDict_GetItemString(dict, "compile_cell");
    c->format_exception = PyDict_GetItemString(dict, "format_exception");
    c->final_literal = PyDict_GetItemString(dict, "final_literal");
    c->parse_input = PyDict_GetItemString(dict, "parse_input");
    if (!c->compile_cell || !c->format_exception || !c->final_literal || !c->parse_input) {
        snprintf(err, errlen, "the REPL glue is incomplete");
        return -1;
    }
    Py_INCREF(c->compile_cell);
    Py_INCREF(c->format_exception);
    Py_INCREF(c->final_literal);
    Py_INCREF(c->parse_input);
    return 0;
fail:
    child_python_error(err, errlen, "cannot load the REPL glue");
    return -1;
}
