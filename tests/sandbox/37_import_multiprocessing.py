# case: import multiprocessing
# expect: ImportError
import multiprocessing
multiprocessing.Process(target=print).start()
