#include "runtime/error.h"
