# case: from inside the glue's own call (an exception whose __str__ walks the frames up to the glue's globals) replace compile, compile_cell and its code, and the traceback and linecache functions; patch the classes the glue uses
# expect: glue: glue reached, code refused, classes immutable
sys = __import__('json').codecs.sys
report = []
ast = sys.modules['ast']
tb = sys.modules['traceback']
for cls, name in ((ast.Expr, '__setattr__'), (ast.Module, 'body'), (tb.TracebackException, 'format')):
    try:
        setattr(cls, name, property(lambda self: 1 / 0))
        report.append('class patched')
    except TypeError:
        pass
class Walker(Exception):
    def __str__(self):
        f = sys._getframe(1)
        while f is not None:
            g = f.f_globals
            if 'compile_cell' in g and 'glue reached' not in report:
                report.append('glue reached')
                g['compile'] = lambda *a, **k: (_ for _ in ()).throw(SystemExit('hijacked'))
                g['ast'] = None
                try:
                    g['compile_cell'].__code__ = (lambda *a: None).__code__
                    report.append('code replaced')
                except RuntimeError:
                    report.append('code refused')
                g['compile_cell'] = None
            f = f.f_back
        tb.format_exception = lambda *a, **k: ['forged traceback\n']
        sys.modules['linecache'].getline = lambda *a, **k: 'forged line'
        if 'class patched' not in report:
            report.append('classes immutable')
        print('glue: ' + ', '.join(report))
        return 'walked'
raise Walker()
