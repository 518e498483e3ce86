// The chain core: plain Java, no Android dependency. On the build machine it is compiled
// and tested without Gradle by ../scripts/build_core.sh (what CI runs); this file builds the
// same sources for the app.
plugins {
    `java-library`
}

java {
    // What Android's D8 takes, and what the build script compiles with (--release 11).
    sourceCompatibility = JavaVersion.VERSION_11
    targetCompatibility = JavaVersion.VERSION_11
}

dependencies {
    implementation(libs.jackson.core)
    testImplementation(libs.junit)
}
