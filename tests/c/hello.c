/* Prints a line; built static and dynamic by the fdguard-run tests. */
#include <stdio.h>

int main(void) {
    puts("hello");
    return 0;
}
