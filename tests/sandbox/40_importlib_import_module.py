# case: importlib.import_module('os')
# expect: ImportError
import importlib
importlib.import_module('subprocess')
