/* doctor — `rlm doctor`: placeholder being written (issue 3). */
#include <stdio.h>

#include "commands.h"

int cmd_doctor(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("rlm doctor: not implemented yet\n", stderr);
    return 4;
}
