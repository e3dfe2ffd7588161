#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("%s, %s\n", getenv("APP_GREETING"), argc > 1 ? argv[1] : "nobody");
    return 0;
}
