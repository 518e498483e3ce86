#!/usr/bin/env bash
# Builds the chain core without Gradle (javac + jar) and runs its JUnit tests.
#
#   android_demo/scripts/build_core.sh [OUT_DIR]     (default: android_demo/core/build/plain)
#
# Needs a JDK (17 here; the core compiles for Java 11, what Android's D8 takes) and the jars of
# Debian's libjackson2-core-java and junit4 (apt-get install default-jdk-headless junit4
# libjackson2-core-java), looked up in $JAVA_LIBS (default /usr/share/java). Writes
# OUT_DIR/keras-dynamic-core.jar, OUT_DIR/test-classes and OUT_DIR/classpath.txt (the classpath
# of the jar, the test classes and Jackson, for running TraceReplay).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
core="$here/../core"
out="${1:-$core/build/plain}"
libs="${JAVA_LIBS:-/usr/share/java}"
jackson="$libs/jackson-core.jar"
junit="$libs/junit4.jar"
hamcrest="$libs/hamcrest-core.jar"
for tool in javac jar java; do
  command -v "$tool" >/dev/null || { echo "build_core: '$tool' not found (install a JDK)" >&2; exit 3; }
done
for lib in "$jackson" "$junit" "$hamcrest"; do
  [ -f "$lib" ] || { echo "build_core: $lib not found (apt-get install junit4 libjackson2-core-java, or set JAVA_LIBS)" >&2; exit 3; }
done

rm -rf "$out"
mkdir -p "$out/classes" "$out/test-classes"
javac --release 11 -Xlint:all -Werror -encoding UTF-8 -cp "$jackson" -d "$out/classes" \
  $(find "$core/src/main/java" -name '*.java' | sort)
jar --create --file "$out/keras-dynamic-core.jar" -C "$out/classes" .
javac --release 11 -Xlint:all -Werror -encoding UTF-8 \
  -cp "$out/keras-dynamic-core.jar:$jackson:$junit" -d "$out/test-classes" \
  $(find "$core/src/test/java" -name '*.java' | sort)
echo "$out/keras-dynamic-core.jar:$out/test-classes:$jackson" > "$out/classpath.txt"

tests=$(cd "$out/test-classes" && find . -name '*Test.class' | sed 's|^\./||; s|\.class$||; s|/|.|g' | sort)
java -cp "$out/keras-dynamic-core.jar:$out/test-classes:$jackson:$junit:$hamcrest" \
  org.junit.runner.JUnitCore $tests
